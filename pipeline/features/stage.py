"""Customer features: Feast's online store (precomputed nightly) plus request-time features.

The FeatureStore is created once, inside the serving event loop (Feast's async Redis client
binds to the first loop that uses it), by ``FeaturesStage.astart``. Unknown customer or
store down: the configured defaults, and the stage says it degraded. A default is a stand-in
for code that needs a value, never a fact about the customer: the model is not told it and an
answer may not rest on it (``known_features``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.core.stage import Degraded, FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState


def _defer_feasts_torch_import() -> None:
    """Feast imports PyTorch at import time whenever it is installed (feast.torch_wrapper),
    for tensor conversions we never use: measured +200 MB RSS and +2.4 s of startup in the
    serving process. Register a stand-in that imports torch only if Feast ever asks for it."""
    if "feast.torch_wrapper" in sys.modules:
        return
    wrapper = types.ModuleType("feast.torch_wrapper")

    def get_torch() -> Any:
        return importlib.import_module("torch")

    wrapper.TORCH_AVAILABLE = importlib.util.find_spec("torch") is not None  # type: ignore[attr-defined]
    wrapper.get_torch = get_torch  # type: ignore[attr-defined]
    sys.modules["feast.torch_wrapper"] = wrapper


def feature_store(settings: Settings) -> Any:
    """A FeatureStore on feature_repo/, its online store switched to Redis when configured."""
    _defer_feasts_torch_import()
    from feast import FeatureStore, RepoConfig

    repo = settings.feast_repo.resolve()
    if settings.features.online_store == "sqlite":
        return FeatureStore(repo_path=str(repo))
    if not settings.redis_url:
        raise ValueError("features.online_store redis needs redis_url")
    raw = yaml.safe_load((repo / "feature_store.yaml").read_text())
    raw["online_store"] = {"type": "redis",
                           "connection_string": _feast_redis(settings.redis_url)}
    return FeatureStore(config=RepoConfig(repo_path=repo, **raw), repo_path=str(repo))


def _feast_redis(url: str) -> str:
    """redis://host:port/db -> Feast's "host:port,db=N" connection string."""
    rest = url.split("://", 1)[-1]
    hostport, _, db = rest.partition("/")
    return f"{hostport},db={db or 0}"


def _definitions(repo: Path) -> list[Any]:
    _defer_feasts_torch_import()
    spec = importlib.util.spec_from_file_location("ragpacer_feature_repo", repo / "customers.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return [module.customer, module.customer_stats]


def materialize(settings: Settings, *, demo: bool = False) -> dict[str, Any]:
    """The nightly batch job: apply the definitions, then load the online store."""
    from ragpacer.pipeline.features.data import write_demo_customers

    repo = settings.feast_repo.resolve()
    parquet = repo / "data" / "customer_stats.parquet"
    if demo or not parquet.exists():
        write_demo_customers(parquet)
    store = feature_store(settings)
    t0 = time.perf_counter()
    store.apply(_definitions(repo))
    # An explicit window, not materialize_incremental: the registry (shared by the SQLite
    # and Redis online stores) would otherwise skip a store loaded for the first time.
    now = datetime.now(UTC)
    store.materialize(start_date=now - timedelta(days=365), end_date=now)
    return {"online_store": settings.features.online_store, "parquet": str(parquet),
            "seconds": round(time.perf_counter() - t0, 2)}


class FeaturesStage(StageBase):
    name: ClassVar[str] = "features"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"default"})

    def __init__(self, settings: Settings, transactions: Any = None) -> None:
        self.settings = settings
        cfg = settings.features
        self.refs = [f"{cfg.feature_view}:{n}" for n in cfg.names]
        self.transactions = transactions  # request-time features (agents.builtin.transactions)
        self.store: Any = None

    async def astart(self) -> None:
        if self.store is None:
            self.store = feature_store(self.settings)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        cfg = self.settings.features
        uid = state.get("user_id")
        if not uid:
            return Degraded(self._with_defaults({}), "no customer id")
        if self.store is None:  # importing Feast blocks for seconds: never on a request
            raise RuntimeError("feature store not started (Pipeline.astart creates it)")
        rows = [{"customer_id": uid}]
        if cfg.online_store == "redis":
            resp = await self.store.get_online_features_async(features=self.refs,
                                                              entity_rows=rows)
        else:  # SQLite: ~0.1 ms, bounded, no async API
            resp = self.store.get_online_features(features=self.refs, entity_rows=rows)
        data = resp.to_dict()
        values = {n: data.get(n, [None])[0] for n in cfg.names}
        if self.transactions is not None:
            recent = await self.transactions.since(uid, time.time() - 3600)
            values["transactions_last_hour"] = len(recent)
        if all(values.get(n) is None for n in cfg.names):
            return Degraded(self._with_defaults(values), "unknown customer")
        return self._with_defaults(values)

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        return self._with_defaults({})

    def _with_defaults(self, values: dict[str, Any]) -> Update:
        known = {k: v for k, v in values.items() if v is not None}
        defaults = self.settings.features.defaults
        return {"features": {**defaults, **known},
                "features_defaulted": [n for n in defaults if n not in known]}


def known_features(state: RequestState) -> dict[str, Any]:
    """The features that describe this customer: read from the store or at request time, not
    the configured defaults standing in for the ones that could not be read."""
    defaulted = set(state.get("features_defaulted", ()))
    return {k: v for k, v in state.get("features", {}).items() if k not in defaulted}

"""Feast: apply + materialize + online reads with SQLite and Redis, defaults when it fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.stage import Degraded
from ragpacer.pipeline.features.stage import FeaturesStage, materialize
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import ROOT, make_settings
from tests.support.http import free_port
from tests.support.redis import redis_up
from tests.support.resources import RESOURCES

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of feature_repo/, so tests never touch the project's online store."""
    target = tmp_path_factory.mktemp("feast") / "feature_repo"
    shutil.copytree(
        ROOT / "feature_repo", target, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    return target


def settings_for(repo: Path, store: str, url: str = "http://127.0.0.1:9/v1", **extra):  # type: ignore[no-untyped-def]
    return make_settings(
        url,
        feast_repo=str(repo),
        redis_url=REDIS if store == "redis" else None,
        features={"enabled": True, "online_store": store},
        **extra,
    )


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_materialize_then_read_online(repo: Path, store: str) -> None:
    if store == "redis" and not redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    s = settings_for(repo, store)
    out = materialize(s, demo=True)
    assert out["online_store"] == store
    stage = FeaturesStage(s)
    await stage.astart()
    ctx = RunContext(Deadline.after_ms(5000), s)
    known = await stage({"user_id": "c-0001"}, ctx)
    assert not isinstance(known, Degraded)
    assert known["features"]["tier"] in ("standard", "premium", "business")
    assert known["features"]["lifetime_value_eur"] > 0 and known["features_defaulted"] == []
    unknown = await stage({"user_id": "nobody"}, ctx)
    assert isinstance(unknown, Degraded) and unknown.reason == "unknown customer"
    assert unknown.update["features"]["tier"] == "standard"  # the configured default
    assert set(unknown.update["features_defaulted"]) == set(s.features.defaults)


async def test_pipeline_merges_features_and_request_time_data(repo: Path, scripted) -> None:
    s = settings_for(repo, "sqlite", scripted.url, stages={"features": {"budget_ms": 2000}})
    materialize(s)
    p = Pipeline(s, resources=RESOURCES)
    await p.astart()
    store = p.stages["tools"].registry.get("recent_transactions").store
    await store.add("c-0002", {"amount_eur": 9.5})
    result = await p.arun("show my recent transactions", user_id="c-0002")
    assert result.route == "account_activity" and "features" not in result.degraded
    prompt = scripted.requests[-1]["messages"][-1]["content"]
    assert "tier=" in prompt and "transactions_last_hour=1" in prompt
    await p.aclose()


async def test_store_down_gives_defaults_and_says_so(repo: Path, scripted) -> None:
    s = make_settings(
        scripted.url,
        feast_repo=str(repo),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        features={"enabled": True, "online_store": "redis"},
        stages={"features": {"budget_ms": 2000}},
        # Redis is down, so no transactions either: without the route's evidence bar, the
        # LLM is asked from the help centre's sources and what is known of the customer.
        routing={"routes": {"account_activity": {"min_evidence": None}}},
    )
    p = Pipeline(s, resources=RESOURCES)
    await p.astart()
    result = await p.arun("show my recent transactions", user_id="c-0001")
    assert result.answer and "features" in result.degraded
    rec = next(r for r in result.stages if r.name == "features")
    assert rec.fallback == "default"
    prompt = scripted.requests[-1]["messages"][-1]["content"]
    # The defaults stand in for code; told to the model, a premium customer would hear
    # the standard tier's terms as their own.
    assert "<customer>" not in prompt and "tier=" not in prompt
    await p.aclose()


def test_a_default_is_no_evidence_of_the_customer() -> None:
    from ragpacer.pipeline.grounding import evidence_of

    state = {"query": "what do I pay", "sources": [], "tool_results": [],
             "features": {"tier": "standard", "open_tickets": 2},
             "features_defaulted": ["tier"]}
    evidence = " ".join(evidence_of(state))  # type: ignore[arg-type]
    assert "open_tickets" in evidence and "standard" not in evidence


async def test_customer_profile_tool_reads_feast(repo: Path) -> None:
    from ragpacer.agents.builtin.profile import CustomerProfile

    s = settings_for(repo, "sqlite")
    materialize(s)
    stage = FeaturesStage(s)
    await stage.astart()
    tool = CustomerProfile(stage)
    known = await tool({"customer_id": "c-0003"})
    assert known["known"] and known["tier"] in ("standard", "premium", "business")
    assert await tool({"customer_id": "nobody"}) == {"known": False}

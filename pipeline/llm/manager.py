"""Builds the managed engine a config asks for: prepare, then start, then wait for health."""

from __future__ import annotations

from collections.abc import Callable

from ragpacer.pipeline.core.errors import ConfigError
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.llm.engine import ManagedEngine
from ragpacer.pipeline.llm.prepare import prepare


def managed_engine(settings: Settings, say: Callable[[str], None] = print) -> ManagedEngine:
    cfg = settings.llm.managed
    names = [m.name for m in settings.llm.models]
    if cfg.model not in names:
        raise ConfigError(f"managed engine serves unknown model {cfg.model!r}; models: {names}",
                          field="llm.managed.model")
    model = settings.llm.model(cfg.model)
    expected = f"http://{cfg.host}:{cfg.port}/v1"
    if model.url.rstrip("/") != expected:
        raise ConfigError(
            f"model {model.name!r} has url {model.url!r} but the managed engine listens on "
            f"{expected}",
            field="llm.models",
        )
    prepared = prepare(settings.home, cfg.kind, say)
    return ManagedEngine(cfg, prepared, settings.home, model.name)

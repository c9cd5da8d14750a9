from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragpacer.pipeline.bench.quality import variant_overrides
from ragpacer.pipeline.core.settings import Settings, deep_merge, load_settings
from ragpacer.pipeline.sdk import Pipeline
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.resources import RESOURCES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings are the only reader of the environment; tests start from none of it.
    for key in list(os.environ):
        if key.startswith("RAGPACER_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session", autouse=True)
def _shared_resources() -> Iterator[None]:
    yield
    asyncio.run(RESOURCES.aclose())


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(Script()) as server:
        yield server


def make_settings(llm_url: str, answer: str | None = "llm", **overrides: Any) -> Settings:
    """The shipped example config pointed at a given LLM server. Every route with a model
    answers ``answer``'s way (default: through the LLM, unchecked, since most tests exercise
    the LLM path's budgets, cuts and streaming); ``answer=None`` keeps the shipped paths."""
    base: dict[str, Any] = {
        "tracing": {"exporter": "none"},
        "llm": {"engine": "external",
                "models": [{"name": "smollm2", "url": llm_url, "decode_tokens_per_s": 50,
                            "ttft_ms": 20}]},
    }
    if answer is not None:
        shipped = load_settings(ROOT / "ragpacer.yaml", environ={}).routing.routes
        base.update(variant_overrides(answer, shipped))
    base = deep_merge(base, overrides)
    return load_settings(ROOT / "ragpacer.yaml", environ={}, overrides=base)


@pytest.fixture
async def make_pipeline():  # type: ignore[no-untyped-def]
    made: list[Pipeline] = []

    def factory(llm_url: str, **overrides: Any) -> Pipeline:
        p = Pipeline(make_settings(llm_url, **overrides), resources=RESOURCES)
        made.append(p)
        return p

    yield factory
    for p in made:
        await p.aclose()

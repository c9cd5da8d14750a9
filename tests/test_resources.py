"""Who opens and closes what pipelines share: the Qdrant Edge shard is locked by whoever opens
it, so one owner per process opens it once and releases it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragpacer.pipeline.cli import _ingest_demo_if_empty
from ragpacer.pipeline.resources import Resources
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import ROOT, make_settings
from tests.scripted_llm import ScriptedLLM


@pytest.fixture
def own_index(tmp_path: Path, scripted: ScriptedLLM):  # type: ignore[no-untyped-def]
    """A home of its own with the demo help centre ingested: the session's shared index stays
    out of these tests' way."""
    models = ROOT / ".ragpacer" / "models"
    if not (models / "minilm-l6-v2-onnx" / "model-int8.onnx").exists():
        pytest.skip("embedder not prepared: run `ragpacer models prepare` (make test does)")
    (tmp_path / "models").symlink_to(models)
    settings = make_settings(scripted.url, answer="extractive", home=str(tmp_path),
                             routing={"classifier": "embedding"},
                             retrieval={"backend": "edge"}, cache={"enabled": False})
    _ingest_demo_if_empty(settings)
    return settings


async def test_a_pipeline_closes_the_index_it_opened(own_index) -> None:  # type: ignore[no-untyped-def]
    first = Pipeline(own_index)
    original = first.store.backend.shard_path
    beside = Pipeline(own_index)  # its own resources: the shard is locked by the first
    copy = beside.store.backend.shard_path
    assert copy != original and copy.name == original.name, "a read-only copy, same index"
    assert beside.index_id == first.index_id  # so both share one cache version
    assert (await beside.arun("How do I reset my PIN?")).sources
    await beside.aclose()
    assert not copy.exists(), "the copy goes with the pipeline that made it"
    await first.aclose()
    again = Pipeline(own_index)  # released by aclose: the index itself opens
    assert again.store.backend.shard_path == original
    await again.aclose()


async def test_pipelines_sharing_resources_search_one_shard_that_outlives_them(own_index) -> None:  # type: ignore[no-untyped-def]
    shared = Resources()
    a = Pipeline(own_index, resources=shared)
    b = Pipeline(own_index, resources=shared)
    assert a.store.backend is b.store.backend
    original = a.store.backend.shard_path
    await a.aclose()  # not the owner: b keeps searching the open shard
    assert (await b.arun("How do I reset my PIN?")).sources
    await b.aclose()
    held = Pipeline(own_index)
    assert held.store.backend.shard_path != original, "still held by its owner: a copy"
    await held.aclose()
    await shared.aclose()
    after = Pipeline(own_index)
    assert after.store.backend.shard_path == original
    await after.aclose()

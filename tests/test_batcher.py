"""The embedding micro-batcher under concurrency, with the real ONNX embedder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.retrieval.batcher import MicroBatcher
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not (embedder_dir(ROOT / ".ragpacer") / "model-int8.onnx").exists():
        pytest.skip("embedder not prepared: run `ragpacer models prepare` (make test does)")
    return Embedder(embedder_dir(ROOT / ".ragpacer"))


async def test_every_caller_gets_its_own_vector(embedder: Embedder) -> None:
    batcher = MicroBatcher(embedder.embed, window_ms=5.0, max_batch=16)
    queries = [f"question number {i} about my {w}" for i, w in
               enumerate(["card", "loan", "mortgage", "password", "transfer"] * 8)]
    vectors = await asyncio.gather(*(batcher.embed(q) for q in queries))
    assert max(batcher.batches) > 1, "concurrent callers must share batches"
    assert sum(batcher.batches) == len(queries) and max(batcher.batches) <= 16
    for q, v in zip(queries, vectors, strict=True):
        # Same text alone vs in a padded INT8 batch: the same vector up to quantisation noise.
        assert float(v @ embedder.embed_one(q)) > 0.97
    sims = np.stack(vectors) @ np.stack(vectors).T
    assert (np.argmax(sims, axis=1) == np.arange(len(queries))).all()
    batcher.close()


async def test_a_lone_request_waits_at_most_the_window(embedder: Embedder) -> None:
    batcher = MicroBatcher(embedder.embed, window_ms=2.0)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(batcher.embed("alone"))
    await asyncio.sleep(0)
    assert batcher._timer is not None
    assert batcher._timer.when() - loop.time() <= 0.002
    await task
    assert batcher.batches == [1]
    batcher.close()


async def test_an_urgent_deadline_flushes_at_once(embedder: Embedder) -> None:
    batcher = MicroBatcher(embedder.embed, window_ms=20.0)
    relaxed = asyncio.create_task(batcher.embed("no hurry"))
    await asyncio.sleep(0)
    assert batcher._timer is not None
    await batcher.embed("in a hurry", Deadline.after_ms(5))
    assert batcher.batches[0] == 2 and batcher._timer is None
    await relaxed
    batcher.close()


async def test_a_cancelled_caller_does_not_hurt_the_others(embedder: Embedder) -> None:
    batcher = MicroBatcher(embedder.embed, window_ms=5.0)
    doomed = asyncio.create_task(batcher.embed("cancel me"))
    kept = asyncio.create_task(batcher.embed("keep me"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept).shape == (384,)
    batcher.close()


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda t: np.zeros((len(t), 384)), window_ms=-1)

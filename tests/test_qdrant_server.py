"""The Qdrant server backend sends the same schema and queries as the Edge one.

No Qdrant server can run here: a loopback HTTP peer records what qdrant-client sends.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragpacer.retrieval.stores.edge import EdgeStore
from ragpacer.retrieval.stores.server import ServerStore
from ragpacer.retrieval.types import Document
from tests.support.qdrant import FakeQdrant


@pytest.fixture
def fake() -> FakeQdrant:
    f = FakeQdrant()
    yield f
    f.server.shutdown()


async def test_collection_schema_matches_the_edge_store(fake: FakeQdrant) -> None:
    store = ServerStore(fake.url)
    await store.create(384, ["product", "doc_type"])
    method, _, body = next(c for c in fake.calls if c[1] == "/collections/ragpacer")
    assert method == "PUT"
    assert body["vectors"] == {"dense": {"size": 384, "distance": "Cosine"}}
    assert body["sparse_vectors"] == {"bm25": {"modifier": "idf"}}
    indexes = [c[2] for c in fake.calls if "/index" in c[1]]
    assert {(i["field_name"], i["field_schema"]) for i in indexes} == {
        ("product", "keyword"),
        ("doc_type", "keyword"),
    }
    await store.upsert(
        [Document(id="a", text="t", metadata={"product": "cards"})],
        np.ones((1, 384), dtype=np.float32),
        [([7], [0.5])],
    )
    upsert = next(c[2] for c in fake.calls if c[1].startswith("/collections/ragpacer/points"))
    point = upsert["points"][0]
    assert point["vector"]["bm25"] == {"indices": [7], "values": [0.5]}
    assert point["payload"] == {"doc_id": "a", "title": "", "text": "t", "product": "cards"}
    await store.aclose()


@pytest.mark.parametrize("mode", ["bm25", "dense", "bm25_then_dense", "fusion"])
async def test_queries_have_the_edge_shape(fake: FakeQdrant, tmp_path, mode: str) -> None:  # type: ignore[no-untyped-def]
    store = ServerStore(fake.url)
    vec = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    filters = {"product": ("cards", "loans")}
    hits = await store.search("lost card", vec, 5, filters, mode, 50)
    assert hits[0].id == "cards-pin#0" and hits[0].metadata == {"product": "cards"}
    body = fake.calls[-1][2]
    edge = EdgeStore.create(tmp_path / "shard", 384, ["product"])
    reference = edge.request("lost card", vec, 5, filters, mode, 50)
    want_filter = {"must": [{"key": "product", "match": {"any": ["cards", "loans"]}}]}
    assert body["limit"] == 5 == reference.limit
    assert len(body.get("prefetch", [])) == len(reference.prefetches)
    for sent, ref in zip(body.get("prefetch", []), reference.prefetches, strict=True):
        assert sent["limit"] == ref.limit == 50 and sent["filter"] == want_filter
    if mode in ("bm25", "dense"):
        assert body["filter"] == want_filter
        assert body["using"] == ("bm25" if mode == "bm25" else "dense")
    if mode == "fusion":
        assert body["query"] == {"rrf": {"k": 60}}
        assert [p["using"] for p in body["prefetch"]] == ["bm25", "dense"]
    if mode == "bm25_then_dense":
        assert body["using"] == "dense" and body["prefetch"][0]["using"] == "bm25"
    edge.close()
    await store.aclose()


def test_local_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="local mode"):
        ServerStore(":memory:")


async def test_every_backend_is_one_async_store(fake: FakeQdrant, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Edge shard and the in-memory index are wrapped once; the server is async itself.
    The stage's fallback (BM25, synchronous) searches an in-process store directly and, for
    the server, the knowledge base in memory: no network call on the fallback path."""
    from ragpacer.pipeline.core.settings import Settings
    from ragpacer.retrieval.bm25 import BM25Index
    from ragpacer.retrieval.hybrid import HybridIndex
    from ragpacer.retrieval.stage import Retrieval
    from ragpacer.retrieval.stores import InProcess, Store

    docs = [Document("cards-pin", "Forgot your PIN? See it in the app.", "PIN"),
            Document("loans", "Personal loans from 1,000 EUR.", "Loans")]
    index = BM25Index(docs)
    memory = InProcess(HybridIndex(index, np.eye(2, 384, dtype=np.float32)), "mem")
    edge = InProcess(EdgeStore.create(tmp_path / "shard", 384, ["product"]), "edge")
    server = ServerStore(fake.url)
    assert all(isinstance(s, Store) for s in (memory, edge, server))
    hits = await memory.search("PIN", np.eye(1, 384, dtype=np.float32)[0], 1, None, "fusion",
                               10, "dbsf")
    assert hits[0].id == "cards-pin"
    assert server.sparse_search("PIN", 2, None) is None

    ctx = type("Ctx", (), {"settings": Settings()})()
    state = {"route": "rag", "query": "forgot my PIN", "filters": {}}
    calls = len(fake.calls)
    fallback = Retrieval(index, {}, server).fallback("cheaper", state, ctx)
    assert fallback["sources"][0].id == "cards-pin" and len(fake.calls) == calls
    assert Retrieval(index, {}, memory).fallback("cheaper", state, ctx)["sources"][0].id == \
        "cards-pin"
    await server.aclose()


def test_ingest_into_the_server_switches_the_alias_in_one_update(fake: FakeQdrant,
                                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new collection, the points, then the alias the pipeline queries moved to it in one
    update with the old one, which is then dropped: queries see one index or the other."""
    from ragpacer.retrieval.embedder import Embedder
    from ragpacer.retrieval.embedder_prepare import embedder_dir
    from ragpacer.retrieval.ingest import ingest_server
    from tests.conftest import ROOT

    home = ROOT / ".ragpacer"
    if not (embedder_dir(home) / "model-int8.onnx").exists():
        pytest.skip("embedder not prepared: run `ragpacer models prepare` (make test does)")
    corpus = tmp_path / "kb.jsonl"
    corpus.write_text('{"id": "cards-pin", "title": "PIN", "text": "See your PIN in the app."}\n'
                      '{"id": "loans", "title": "Loans", "text": "Loans from 1,000 EUR."}\n')
    fake.aliases = {"ragpacer": "ragpacer-1"}
    out = ingest_server(corpus, fake.url, "ragpacer", Embedder(embedder_dir(home)), ["product"])
    new = out["path"].split()[-1]
    assert new.startswith("ragpacer-") and new != "ragpacer-1" and out["chunks"] == 2
    paths = [(method, path.split("?")[0]) for method, path, _ in fake.calls]
    assert paths.index(("PUT", f"/collections/{new}")) < paths.index(
        ("PUT", f"/collections/{new}/points"))
    switch = next(body for method, path, body in fake.calls
                  if method == "POST" and path.startswith("/collections/aliases"))
    assert switch["actions"] == [
        {"delete_alias": {"alias_name": "ragpacer"}},
        {"create_alias": {"collection_name": new, "alias_name": "ragpacer"}}]
    assert paths[-1] == ("DELETE", "/collections/ragpacer-1"), "the old index is dropped"
    store = ServerStore(fake.url)
    fake.aliases = {"ragpacer": new}
    store.name_live_index(fake.url)
    assert store.index_id == f"qdrant-{new}", "a re-ingest changes the cache's version"

"""The Qdrant server backend sends the same schema and queries as the Edge one.

No Qdrant server can run here: a loopback HTTP peer records what qdrant-client sends.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ragpacer.retrieval.stores.edge import EdgeStore
from ragpacer.retrieval.stores.server import ServerStore
from ragpacer.retrieval.types import Document


class FakeQdrant:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else {}
                outer.calls.append((self.command, self.path, body))
                if self.path.endswith("/points/query"):
                    point = {
                        "id": "00000000-0000-0000-0000-000000000001",
                        "version": 1,
                        "score": 0.5,
                        "payload": {
                            "doc_id": "cards-pin#0",
                            "title": "PIN",
                            "text": "t",
                            "product": "cards",
                        },
                    }
                    self._reply({"result": {"points": [point]}, "status": "ok", "time": 0})
                elif self.command == "GET":
                    self._reply({"title": "qdrant", "version": "1.20.0"})
                elif self.path.endswith("/collections/ragpacer"):
                    self._reply({"result": True, "status": "ok", "time": 0})
                else:  # upserts and index creation answer with an UpdateResult
                    self._reply({"result": {"operation_id": 1, "status": "completed"},
                                 "status": "ok", "time": 0})

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


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

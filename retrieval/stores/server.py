"""A Qdrant server or cluster through qdrant-client (REST): the scale-out backend.

Same collection schema and the same queries as the embedded Edge store (retrieval/stores/
edge.py): a "dense" cosine vector, a "bm25" sparse vector with the IDF modifier, keyword
indexes on the filter fields, and the four search modes as prefetch/fusion queries.
Never qdrant-client's local mode: it is pure Python and far too slow for the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as m

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.filters import Filters
from ragpacer.retrieval.sparse import SparseQuery, query_vector
from ragpacer.retrieval.stores.edge import DENSE, RRF_K, SPARSE, point_id
from ragpacer.retrieval.types import Document, Hit, Mode


def to_filter(filters: Filters | None) -> m.Filter | None:
    if not filters:
        return None
    return m.Filter(must=[m.FieldCondition(key=k, match=m.MatchAny(any=list(v)))
                          for k, v in filters.items()])


class ServerStore:
    def __init__(self, url: str, collection: str = "ragpacer", timeout_s: float = 1.0,
                 api_key: str | None = None) -> None:
        if url in (":memory:", "") or not url.startswith(("http://", "https://")):
            raise ValueError("ServerStore needs an http(s) URL of a Qdrant server "
                             "(qdrant-client's local mode is not used)")
        self.client = AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, round(timeout_s)),
                                        prefer_grpc=False, check_compatibility=False)
        self.collection = collection
        self.index_id = f"qdrant-{collection}"
        self.analyzer = Analyzer()

    def name_live_index(self, url: str) -> None:
        """Name the collection the alias points at now in ``index_id``, so a re-ingest (a new
        collection) makes the cached answers of the previous one unreachable. One request at
        startup; an unreachable server keeps the alias's name."""
        from qdrant_client import QdrantClient

        try:
            client = QdrantClient(url=url, timeout=2, prefer_grpc=False,
                                  check_compatibility=False)
            aliases = client.get_aliases().aliases
            client.close()
        except Exception:  # started before the server: the alias names it
            return
        live = next((a.collection_name for a in aliases if a.alias_name == self.collection),
                    None)
        if live is not None:
            self.index_id = f"qdrant-{live}"

    async def create(self, dim: int, filter_fields: Sequence[str]) -> None:
        await self.client.create_collection(
            self.collection,
            vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
        for field in filter_fields:
            await self.client.create_payload_index(self.collection, field,
                                                   m.PayloadSchemaType.KEYWORD)

    async def switch_alias(self, alias: str) -> str | None:
        """Point ``alias`` (the name queries use) at this store's collection in one atomic
        update; returns the collection it pointed at before (None: none)."""
        aliases = (await self.client.get_aliases()).aliases
        before = next((a.collection_name for a in aliases if a.alias_name == alias), None)
        ops: list[Any] = [m.CreateAliasOperation(create_alias=m.CreateAlias(
            collection_name=self.collection, alias_name=alias))]
        if before is not None:
            ops.insert(0, m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        await self.client.update_collection_aliases(change_aliases_operations=ops)
        return before

    async def upsert(self, docs: Sequence[Document], dense: np.ndarray,
                     sparse: Sequence[tuple[list[int], list[float]]]) -> None:
        points = [
            m.PointStruct(id=point_id(d.id), vector={
                DENSE: dense[i].tolist(),
                SPARSE: m.SparseVector(indices=sparse[i][0], values=sparse[i][1])},
                payload={"doc_id": d.id, "title": d.title, "text": d.text, **d.metadata})
            for i, d in enumerate(docs)
        ]
        await self.client.upsert(self.collection, points=points, wait=True)

    def request(self, query: SparseQuery, vector: np.ndarray | None, k: int,
                filters: Filters | None, mode: str, candidates: int,
                fusion: str = "rrf") -> dict[str, Any]:
        """query_points arguments for a mode: the same structure as EdgeStore.request."""
        flt = to_filter(filters)
        ids, values = query_vector(self.analyzer, query)
        sparse = m.SparseVector(indices=ids, values=values)
        if mode == "bm25" or vector is None:
            return {"query": sparse, "using": SPARSE, "query_filter": flt, "limit": k}
        dense = np.asarray(vector, dtype=np.float32).tolist()
        if mode == "dense":
            return {"query": dense, "using": DENSE, "query_filter": flt, "limit": k}
        sparse_stage = m.Prefetch(query=sparse, using=SPARSE, filter=flt, limit=candidates)
        if mode == "bm25_then_dense":
            return {"prefetch": [sparse_stage], "query": dense, "using": DENSE, "limit": k}
        dense_stage = m.Prefetch(query=dense, using=DENSE, filter=flt, limit=candidates)
        fused = (m.FusionQuery(fusion=m.Fusion.DBSF) if fusion == "dbsf"
                 else m.RrfQuery(rrf=m.Rrf(k=RRF_K)))
        return {"prefetch": [sparse_stage, dense_stage], "query": fused, "limit": k}

    async def search(self, query: SparseQuery, vector: np.ndarray | None, k: int = 10,
                     filters: Filters | None = None, mode: Mode = "fusion",
                     candidates: int = 100, fusion: str = "rrf") -> list[Hit]:
        res = await self.client.query_points(
            self.collection, with_payload=True,
            **self.request(query, vector, k, filters, mode, candidates, fusion))
        return [_hit(p) for p in res.points]

    def sparse_search(self, query: SparseQuery, k: int,
                      filters: Filters | None) -> list[Hit] | None:
        return None  # every search is a network call: the fallback searches in memory

    async def aclose(self) -> None:
        await self.client.close()


def _hit(p: Any) -> Hit:
    payload = dict(p.payload or {})
    return Hit(id=payload.pop("doc_id", str(p.id)), score=float(p.score),
               title=payload.pop("title", ""), text=payload.pop("text", ""), metadata=payload)

"""Qdrant Edge (qdrant-edge-py): the embedded, on-disk vector store.

Schema: a named dense vector "dense" (cosine) and a sparse vector "bm25" with the IDF modifier;
the payload holds the document id, title, text and metadata, with keyword indexes on the
filter fields. The same names and queries work against a Qdrant server.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as q

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.filters import Filters
from ragpacer.retrieval.sparse import SparseQuery, query_vector
from ragpacer.retrieval.types import Document, Hit, Mode

DENSE, SPARSE = "dense", "bm25"
RRF_K = 60
_NS = uuid.UUID("6f1c7f0e-6d1b-4b7e-9a53-7a2f8e0c3b11")


def point_id(doc_id: str) -> str:
    """Stable: re-ingesting a chunk overwrites it instead of duplicating it."""
    return str(uuid.uuid5(_NS, doc_id))


def to_filter(filters: Filters | None) -> q.Filter | None:
    if not filters:
        return None
    return q.Filter(must=[q.FieldCondition(key=k, match=q.MatchAny(any=list(v)))
                          for k, v in filters.items()])


class EdgeStore:
    def __init__(self, shard: q.EdgeShard, path: Path, analyzer: Analyzer | None = None):
        self.shard = shard
        self.shard_path = path  # identifies the index version (a new one per ingest)
        self.analyzer = analyzer or Analyzer()

    @classmethod
    def create(cls, path: Path, dim: int, filter_fields: Sequence[str]) -> EdgeStore:
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        shard = q.EdgeShard.create(str(path), config)
        for field in filter_fields:
            shard.update(q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Keyword))
        return cls(shard, path)

    @classmethod
    def open(cls, path: Path) -> EdgeStore:
        return cls(q.EdgeShard.load(str(path)), path)

    def upsert(self, docs: Sequence[Document], dense: np.ndarray,
               sparse: Sequence[tuple[list[int], list[float]]]) -> None:
        points = [
            q.Point(id=point_id(d.id),
                    vector={DENSE: dense[i].tolist(), SPARSE: q.SparseVector(*sparse[i])},
                    payload={"doc_id": d.id, "title": d.title, "text": d.text, **d.metadata})
            for i, d in enumerate(docs)
        ]
        self.shard.update(q.UpdateOperation.upsert_points(points))

    def count(self) -> int:
        return self.shard.count(q.CountRequest(exact=True))

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()

    def request(self, query: SparseQuery, vector: np.ndarray | None, k: int,
                filters: Filters | None, mode: str, candidates: int,
                fusion: str = "rrf") -> q.QueryRequest:
        """The query for a mode; a server backend sends the same structure."""
        flt = to_filter(filters)
        ids, values = query_vector(self.analyzer, query)
        sparse = q.Query.Nearest(q.SparseVector(ids, values), using=SPARSE)
        if mode == "bm25" or vector is None:
            return q.QueryRequest(limit=k, query=sparse, filter=flt, with_payload=True)
        dense = q.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=DENSE)
        if mode == "dense":
            return q.QueryRequest(limit=k, query=dense, filter=flt, with_payload=True)
        if mode == "bm25_then_dense":
            return q.QueryRequest(limit=k, query=dense, with_payload=True,
                                  prefetches=[q.Prefetch(limit=candidates, query=sparse,
                                                         filter=flt)])
        # qdrant-edge's stubs type Fusion's variants as classes apart from Fusion.
        fused: Any = q.Fusion.Dbsf() if fusion == "dbsf" else q.Fusion.Rrf(k=RRF_K)
        return q.QueryRequest(limit=k, query=fused, with_payload=True,
                              prefetches=[q.Prefetch(limit=candidates, query=sparse, filter=flt),
                                          q.Prefetch(limit=candidates, query=dense, filter=flt)])

    def search(self, query: SparseQuery, vector: np.ndarray | None, k: int = 10,
               filters: Filters | None = None, mode: Mode = "fusion",
               candidates: int = 100, fusion: str = "rrf") -> list[Hit]:
        points = self.shard.query(self.request(query, vector, k, filters, mode, candidates,
                                               fusion))
        return [_hit(p) for p in points]

    def __len__(self) -> int:
        return self.count()


def _hit(p: Any) -> Hit:
    payload = dict(p.payload or {})
    doc_id, title, text = payload.pop("doc_id", str(p.id)), payload.pop("title", ""), \
        payload.pop("text", "")
    return Hit(id=doc_id, score=float(p.score), title=title, text=text, metadata=payload)

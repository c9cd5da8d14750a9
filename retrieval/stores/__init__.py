"""Search backends behind one async interface: the Qdrant Edge shard and the in-memory hybrid
index run in-process (wrapped once by ``InProcess``), a Qdrant server over the network."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ragpacer.retrieval.filters import Filters
from ragpacer.retrieval.sparse import SparseQuery
from ragpacer.retrieval.types import Hit, Mode


@runtime_checkable
class Store(Protocol):
    """What the retrieval stage searches."""

    # Names the contents: the response cache keys on it, so a re-ingest makes answers built
    # from the previous index unreachable.
    index_id: str

    async def search(self, query: SparseQuery, vector: np.ndarray | None, k: int,
                     filters: Filters | None, mode: Mode, candidates: int,
                     fusion: str) -> list[Hit]: ...

    def sparse_search(self, query: SparseQuery, k: int,
                      filters: Filters | None) -> list[Hit] | None:
        """BM25 alone, synchronously and cheaply (the stage's fallback); None when the store
        cannot answer without a network call."""
        ...

    async def aclose(self) -> None: ...


class SyncSearch(Protocol):
    def search(self, query: SparseQuery, vector: np.ndarray | None, k: int = 10,
               filters: Filters | None = None, mode: Mode = "fusion", candidates: int = 100,
               fusion: str = "rrf") -> list[Hit]: ...


class InProcess:
    """A store that searches in this process (Qdrant Edge, the in-memory hybrid index): a
    sub-millisecond call, made on the event loop rather than paying a thread hop."""

    def __init__(self, backend: SyncSearch, index_id: str) -> None:
        self.backend = backend
        self.index_id = index_id

    async def search(self, query: SparseQuery, vector: np.ndarray | None, k: int,
                     filters: Filters | None, mode: Mode, candidates: int,
                     fusion: str) -> list[Hit]:
        return self.backend.search(query, vector, k, filters, mode, candidates, fusion)

    def sparse_search(self, query: SparseQuery, k: int,
                      filters: Filters | None) -> list[Hit]:
        return self.backend.search(query, None, k, filters, "bm25")

    async def aclose(self) -> None:
        return None  # the backend outlives the pipeline (one Edge shard per process)

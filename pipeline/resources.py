"""What pipelines in one process share, and the one owner that closes it.

A Qdrant Edge shard is locked by whoever opens it, so a second open in the same process fails;
embedding the knowledge base costs seconds; request-time transactions must be the same store
for the tools and the features of a pipeline. A ``Pipeline`` made without ``resources`` makes
its own and closes them with itself; pass one ``Resources`` to several pipelines of one process
(variants compared in an eval, a test suite) to open each of these once.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragpacer.agents.builtin.transactions import RedisTransactionStore, TransactionStore
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.embedder import Embedder

if TYPE_CHECKING:  # qdrant-edge-py loads a native engine: only when an index is opened
    from ragpacer.retrieval.stores.edge import EdgeStore

log = logging.getLogger("ragpacer")


class Resources:
    """Opened Edge shards by path, knowledge-base vectors by (index, embedder) version, and
    transaction stores by Redis URL (``None``: in-process).

    ``snapshots``: a folder of this process's own, where each shard is copied before it is
    opened. Server workers use it: every process searches its own read-only copy of the
    current index instead of contending for the one lock."""

    def __init__(self, snapshots: Path | None = None) -> None:
        self.snapshots = snapshots
        self._edge: dict[Path, EdgeStore] = {}
        self._vectors: dict[tuple[str, str], np.ndarray] = {}
        self._transactions: dict[str | None, TransactionStore | RedisTransactionStore] = {}

    def edge_store(self, path: Path) -> EdgeStore:
        """The shard at ``path``, opened on first use. When another process holds it (a
        running server beside `ragpacer ask`), a read-only copy of it is opened instead of
        giving up the index; raises what opening the copy raises (a damaged shard)."""
        if path not in self._edge:
            from ragpacer.retrieval.stores.edge import EdgeStore

            if self.snapshots is not None:
                self._edge[path] = EdgeStore.open(self._snapshot(path))
                return self._edge[path]
            try:
                self._edge[path] = EdgeStore.open(path)
            except Exception as exc:  # qdrant-edge-py says "WouldBlock" for a held lock
                if "WouldBlock" not in str(exc):
                    raise
                self.snapshots = Path(tempfile.mkdtemp(prefix="ragpacer-index-"))
                log.info("index %s is open in another process: searching a copy", path)
                self._edge[path] = EdgeStore.open(self._snapshot(path))
        return self._edge[path]

    def _snapshot(self, path: Path) -> Path:
        assert self.snapshots is not None
        copy = self.snapshots / path.name
        if not copy.exists():
            shutil.copytree(path, copy, ignore=shutil.ignore_patterns("*.lock"))
        return copy

    def document_vectors(self, index: BM25Index, index_id: str,
                         embedder: Embedder) -> np.ndarray:
        """The knowledge base embedded once per index and embedder version."""
        key = (index_id, embedder.checksum)
        if key not in self._vectors:
            texts = [f"{d.title}. {d.text}" for d in index.documents]
            self._vectors[key] = embedder.embed_many(texts)
        return self._vectors[key]

    def transaction_store(self, redis_url: str | None) -> TransactionStore | RedisTransactionStore:
        if redis_url not in self._transactions:
            self._transactions[redis_url] = (RedisTransactionStore(redis_url) if redis_url
                                             else TransactionStore())
        return self._transactions[redis_url]

    async def aclose(self) -> None:
        """Flush and release the shards (their locks too) and close Redis connections."""
        edges, self._edge = self._edge, {}
        for store in edges.values():
            try:
                store.close()
            except Exception as exc:  # closing must go on for the rest
                log.warning("closing the index %s failed: %s", store.shard_path, exc)
        stores, self._transactions = self._transactions, {}
        for tx in stores.values():
            try:
                await tx.aclose()
            except Exception as exc:  # e.g. its connections belong to a loop now closed
                log.warning("closing a transaction store failed: %s", exc)
        self._vectors.clear()
        if self.snapshots is not None:
            shutil.rmtree(self.snapshots, ignore_errors=True)

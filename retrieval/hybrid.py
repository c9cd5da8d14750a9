"""Hybrid search: metadata filter -> BM25 candidates -> dense re-ranking of only those.

Modes (the same names a vector-store backend implements):
- ``bm25``: sparse only.
- ``dense``: exhaustive cosine over the filtered documents.
- ``bm25_then_dense``: the top ``candidates`` BM25 hits, re-ranked by the query embedding.
- ``fusion``: the BM25 and dense rankings fused, by reciprocal rank (``rrf``) or by scores
  normalised per list (``dbsf``, distribution-based score fusion, as Qdrant does it).
"""

from __future__ import annotations

import numpy as np

from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.filters import Filters
from ragpacer.retrieval.sparse import SparseQuery
from ragpacer.retrieval.types import Hit, Mode

MODES: tuple[Mode, ...] = ("bm25", "dense", "bm25_then_dense", "fusion")
RRF_K = 60


class HybridIndex:
    def __init__(self, bm25: BM25Index, vectors: np.ndarray) -> None:
        if len(vectors) != len(bm25):
            raise ValueError(f"{len(vectors)} vectors for {len(bm25)} documents")
        self.bm25 = bm25
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.bm25)

    def search(self, query: SparseQuery, vector: np.ndarray | None, k: int = 10,
               filters: Filters | None = None, mode: Mode = "bm25_then_dense",
               candidates: int = 100, fusion: str = "rrf") -> list[Hit]:
        if mode == "bm25" or vector is None:
            return self.bm25.search(query, k, filters)
        mask = self.bm25.mask(filters or {})
        if mode == "dense":
            scores = self.vectors @ vector
            return self._top(scores, k, mask)
        sparse = self.bm25.scores(query)
        if mask is not None:
            sparse[~mask] = 0.0
        cand = np.flatnonzero(sparse > 0)
        if cand.size > candidates:
            cand = cand[np.argpartition(-sparse[cand], candidates - 1)[:candidates]]
        if mode == "bm25_then_dense":
            if cand.size == 0:  # no lexical match at all: dense over the filtered set
                return self._top(self.vectors @ vector, k, mask)
            dense = self.vectors[cand] @ vector
            best = np.argsort(-dense, kind="stable")[:k]
            return [self.bm25.hit(int(cand[j]), float(dense[j])) for j in best]
        return self._fusion(sparse, cand, vector, k, mask, candidates, fusion)

    def _fusion(self, sparse: np.ndarray, cand: np.ndarray, vector: np.ndarray, k: int,
                mask: np.ndarray | None, depth: int, fusion: str) -> list[Hit]:
        dense = self.vectors @ vector
        if mask is not None:
            dense = np.where(mask, dense, -np.inf)
        dense_top = np.argpartition(-dense, min(depth, len(dense) - 1))[:depth]
        dense_top = dense_top[np.isfinite(dense[dense_top])]
        fused: dict[int, float] = {}
        for ids, scores in ((cand, sparse[cand]), (dense_top, dense[dense_top])):
            order = np.argsort(-scores, kind="stable")
            part = _dbsf(scores) if fusion == "dbsf" else 1.0 / (RRF_K + 1 + np.argsort(order))
            for i, s in zip(ids.tolist(), part.tolist(), strict=True):
                fused[i] = fused.get(i, 0.0) + s
        best = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
        return [self.bm25.hit(i, s) for i, s in best]

    def _top(self, scores: np.ndarray, k: int, mask: np.ndarray | None) -> list[Hit]:
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self.bm25.hit(int(i), float(scores[i])) for i in top]


def _dbsf(scores: np.ndarray) -> np.ndarray:
    """Distribution-based score fusion, as Qdrant does it: each list's scores scaled from
    mean - 3 sd (0) to mean + 3 sd (1)."""
    if scores.size == 0:
        return scores
    mu, sd = float(scores.mean()), float(scores.std())
    lo, hi = mu - 3 * sd, mu + 3 * sd
    return (scores - lo) / (hi - lo) if hi > lo else np.full_like(scores, 0.5)

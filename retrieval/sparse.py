"""BM25 as sparse vectors: document-side weights here, IDF applied by the store (Qdrant's
IDF modifier). Term ids are stable 32-bit hashes, so no vocabulary file has to be kept."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from retrieval.analyzer import Analyzer


@lru_cache(maxsize=262_144)
def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def document_weights(tokenised: Sequence[list[str]], k1: float = 1.2,
                     b: float = 0.75) -> list[tuple[list[int], list[float]]]:
    avgdl = sum(len(t) for t in tokenised) / max(len(tokenised), 1) or 1.0
    out = []
    for tokens in tokenised:
        norm = k1 * (1 - b + b * len(tokens) / avgdl)
        counts = Counter(tokens)
        ids = [term_id(t) for t in counts]
        out.append((ids, [tf * (k1 + 1) / (tf + norm) for tf in counts.values()]))
    return out


def query_vector(analyzer: Analyzer, query: str) -> tuple[list[int], list[float]]:
    """Each term weighted by how often the query says it (as the in-memory index does)."""
    counts = Counter(term_id(t) for t in analyzer(query))
    ids = sorted(counts)
    return ids, [float(counts[i]) for i in ids]

"""BM25 as sparse vectors: document-side weights here, IDF applied by the store (Qdrant's
IDF modifier). Term ids are stable 32-bit hashes, so no vocabulary file has to be kept."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence

from ragpacer.retrieval.analyzer import CACHED_WORD_CHARS, Analyzer
from ragpacer.retrieval.memo import ShortTextCache


def _term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


term_id: ShortTextCache[int] = ShortTextCache(_term_id, 262_144, CACHED_WORD_CHARS)


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


# A sparse query: the question's text, or its analysed terms with weights (feedback).
SparseQuery = str | Mapping[str, float]


def query_terms(analyzer: Analyzer, query: SparseQuery) -> Mapping[str, float]:
    """Analysed terms and their weights. A term the question repeats weighs that many times:
    long, paragraph-style questions keep their emphasis."""
    if isinstance(query, str):
        return Counter(analyzer(query))
    return dict(query)


def query_vector(analyzer: Analyzer, query: SparseQuery) -> tuple[list[int], list[float]]:
    """Term ids and weights, as the in-memory index scores them."""
    weights: dict[int, float] = {}
    for term, w in query_terms(analyzer, query).items():
        weights[term_id(term)] = weights.get(term_id(term), 0.0) + w
    ids = sorted(weights)
    return ids, [float(weights[i]) for i in ids]

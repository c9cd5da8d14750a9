"""An in-process BM25 index: document-side weights precomputed, IDF applied at query time.

This is the same split Qdrant uses for sparse vectors with the IDF modifier, so the weights
here can be upserted to Qdrant unchanged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.filters import Filters
from ragpacer.retrieval.sparse import SparseQuery, query_terms
from ragpacer.retrieval.types import Document, Hit


class BM25Index:
    def __init__(
        self,
        documents: Sequence[Document],
        *,
        analyzer: Analyzer | None = None,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> None:
        self.analyzer = analyzer or Analyzer()
        self.documents = list(documents)
        self.k1, self.b = k1, b
        n = len(self.documents)
        tokenised = [self.analyzer(f"{d.title}\n{d.text}") for d in self.documents]
        self._tokens = tokenised
        lengths = np.array([len(t) for t in tokenised], dtype=np.float32)
        avgdl = float(lengths.mean()) if n else 1.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, tokens in enumerate(tokenised):
            norm = k1 * (1 - b + b * lengths[i] / avgdl)
            for term, tf in Counter(tokens).items():
                ids, ws = postings.setdefault(term, ([], []))
                ids.append(i)
                ws.append(tf * (k1 + 1) / (tf + norm))
        self._postings = {
            t: (np.array(ids, dtype=np.int32), np.array(ws, dtype=np.float32))
            for t, (ids, ws) in postings.items()
        }
        self._idf = {
            t: math.log(1 + (n - len(ids) + 0.5) / (len(ids) + 0.5))
            for t, (ids, _) in self._postings.items()
        }
        self._max_idf = math.log(1 + (n + 0.5) / 0.5)
        self._facets: dict[str, dict[str, np.ndarray]] = {}
        for i, d in enumerate(self.documents):
            for key, value in d.metadata.items():
                col = self._facets.setdefault(key, {})
                for v in value if isinstance(value, list) else [value]:  # a list: each value
                    mask = col.get(str(v))
                    if mask is None:
                        mask = col[str(v)] = np.zeros(n, dtype=bool)
                    mask[i] = True

    def __len__(self) -> int:
        return len(self.documents)

    def knows(self, term: str) -> bool:
        """Whether any document contains the (analysed) term."""
        return term in self._postings

    def idf(self, term: str) -> float:
        """A term's IDF; one absent from the corpus counts as the rarest."""
        return self._idf.get(term, self._max_idf)

    def mask(self, filters: Filters) -> np.ndarray | None:
        if not filters:
            return None
        n = len(self.documents)
        mask = np.ones(n, dtype=bool)
        for key, values in filters.items():
            col = self._facets.get(key, {})
            any_of = np.zeros(n, dtype=bool)
            for v in values:
                if v in col:
                    any_of |= col[v]
            mask &= any_of
        return mask

    def scores(self, query: SparseQuery) -> np.ndarray:
        scores = np.zeros(len(self.documents), dtype=np.float32)
        for term, count in query_terms(self.analyzer, query).items():
            posting = self._postings.get(term)
            if posting is not None:
                ids, ws = posting
                scores[ids] += (count * self._idf[term]) * ws
        return scores

    def feedback_terms(self, query: SparseQuery, docs: int = 1, terms: int = 20,
                       weight: float = 2.0) -> dict[str, float]:
        """Pseudo-relevance feedback: the query's terms (``weight`` times their count) plus,
        once each, the ``terms`` that best characterise its top ``docs`` BM25 hits
        (frequency in the hit x IDF): a question gains the vocabulary of the document that
        most likely answers it."""
        own = query_terms(self.analyzer, query)
        out: dict[str, float] = {t: weight * c for t, c in own.items()}
        scores = self.scores(own)
        # The best few without sorting the whole corpus (on the hot path of every request).
        best = np.argpartition(-scores, min(docs, len(scores)) - 1)[:docs] \
            if docs and len(scores) else np.zeros(0, dtype=np.int64)
        top = [int(i) for i in best if scores[i] > 0]
        gain: dict[str, float] = {}
        for i in top:
            tokens = self._tokens[i]
            for term, tf in Counter(tokens).items():
                if term not in own:
                    gain[term] = gain.get(term, 0.0) + tf / len(tokens) * self._idf[term]
        # The strongest first; ties in first-seen order, as Counter.most_common keeps them.
        strongest = sorted(gain, key=gain.__getitem__, reverse=True)[:terms]
        out.update({t: 1.0 for t in strongest})
        return out

    def search(self, query: SparseQuery, k: int = 10,
               filters: Filters | None = None) -> list[Hit]:
        scores = self.scores(query)
        mask = self.mask(filters or {})
        if mask is not None:
            scores[~mask] = 0.0
        nonzero = np.flatnonzero(scores > 0)
        if nonzero.size == 0:
            return []
        top = nonzero[np.argsort(-scores[nonzero], kind="stable")[:k]]
        return [self.hit(int(i), float(scores[i])) for i in top]

    def hit(self, i: int, score: float) -> Hit:
        d = self.documents[i]
        return Hit(id=d.id, score=score, title=d.title, text=d.text, metadata=d.metadata)

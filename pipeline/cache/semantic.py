"""Semantic cache: a hit when a new query means the same as a cached one.

Same intent and filter scope, cosine of the shared query embedding above a threshold, and the
same *polarity*: embeddings put "enable 2FA" and "disable 2FA" close together, so a query is
only matched to a cached one whose antonym choices, negations and numbers agree, and that
asks as many questions ("what does X cost?" is near "what does X cost and how many Y?").
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.questions import sub_questions

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"(?<![a-z0-9.,])\d+(?:[.,]\d+)*(?![a-z0-9])")  # 600, 1,000, 0.5; not 2fa
# Each group: words on one side of a meaning, then words on the other side.
ANTONYMS: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(a.split()), frozenset(b.split()))
    for a, b in [
        (
            "enable enabling enabled activate activating on",
            "disable disabling disabled deactivate deactivating off",
        ),
        ("open opening", "close closing closed shut"),
        ("add adding", "remove removing delete deleting"),
        (
            "increase increasing raise raising higher more",
            "decrease decreasing lower lowering reduce reducing less",
        ),
        (
            "freeze freezing lock locking block blocking",
            "unfreeze unfreezing unlock unlocking unblock unblocking",
        ),
        ("start starting", "stop stopping cancel cancelling"),
        ("send sending sent pay paying", "receive receiving received get getting"),
        ("deposit depositing", "withdraw withdrawing withdrawal"),
        ("join joining", "leave leaving"),
        ("before", "after"),
        ("accept accepted", "decline declined reject rejected refused"),
        ("domestic", "international abroad foreign"),
        ("debit", "credit"),
        ("joint", "single sole"),
        ("business", "personal"),
    ]
)
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "cannot",
        "can't",
        "don't",
        "doesn't",
        "didn't",
        "won't",
        "isn't",
        "wasn't",
        "haven't",
        "hasn't",
        "without",
    ]
)


_ANALYZER = Analyzer()


def polarity(text: str) -> tuple[tuple[int, ...], int, tuple[str, ...], int]:
    """For each antonym group: 0 absent, 1 first side, 2 second side (3 both); negation parity;
    the numbers the text names ("can I withdraw 600 EUR?" and "... 400 EUR?" embed alike, and
    their answers differ); how many questions it asks (the answer to one of them is not the
    answer to both)."""
    lowered = text.lower()
    words = set(_WORD.findall(lowered))
    sides = []
    for first, second in ANTONYMS:
        sides.append((1 if words & first else 0) | (2 if words & second else 0))
    numbers = sorted({n.replace(",", "") for n in _NUMBER.findall(lowered)})
    asked = max(1, len(sub_questions(text, _ANALYZER)))
    return tuple(sides), len(words & NEGATIONS) % 2, tuple(numbers), asked


# A scope larger than this is searched through its sign codes first: a full scan of 384-float
# rows is ~0.1 ms at 4,096 and grows linearly (8 ms at 100,000).
EXACT_ROWS = 4096
CODE_BITS = 128  # sign bits per row: 2 words, 16 bytes (a row's vector is 1,536)
CANDIDATES = 256  # rows rescored exactly after the prefilter (a gather of rows spread over
# the whole matrix: ~0.5 us each)


class SignCodes:
    """Random-hyperplane sign codes: the Hamming distance between two codes estimates the
    angle between their vectors (P(bit differs) = angle / pi), so the rows nearest a query
    by cosine are, with high probability, among those nearest by code."""

    def __init__(self, dim: int, bits: int = CODE_BITS, seed: int = 0) -> None:
        self.planes = np.random.default_rng(seed).standard_normal((dim, bits)).astype(np.float32)
        self.words = bits // 64

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        signs = np.atleast_2d(vectors) @ self.planes > 0
        return np.packbits(signs, axis=-1).view(np.uint64)


class _Scope:
    """One scope's vectors in a matrix that grows by doubling: an add writes one row (no
    rebuild), an eviction blanks its row; blanks are compacted away when they are half.
    Beside each row its sign code, for the prefilter of large scopes."""

    def __init__(self, dim: int, codes: SignCodes) -> None:
        self.matrix = np.zeros((16, dim), dtype=np.float32)
        # Word-major (one array per 64 bits): the distance is then a few passes over
        # contiguous arrays, ten times faster than reducing along rows.
        self.codes = np.zeros((codes.words, 16), dtype=np.uint64)
        self.keys: list[str | None] = []
        self.polarities: list[tuple] = []
        self.rows: dict[str, int] = {}
        self.blank = 0

    def put(self, key: str, vector: np.ndarray, code: np.ndarray, pol: tuple) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.keys)
            if row == len(self.matrix):
                self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
                self.codes = np.concatenate([self.codes, np.zeros_like(self.codes)], axis=1)
            self.keys.append(key)
            self.polarities.append(pol)
        self.matrix[row] = vector
        self.codes[:, row] = code
        self.polarities[row] = pol

    def drop(self, key: str) -> None:
        row = self.rows.pop(key)
        self.matrix[row] = 0.0  # a blank row scores 0: never above a threshold
        self.keys[row] = None
        self.blank += 1
        if self.blank * 2 > len(self.keys):
            self._compact()

    def _compact(self) -> None:
        live = [i for i, k in enumerate(self.keys) if k is not None]
        size = max(16, 1 << max(len(live) - 1, 1).bit_length())
        matrix = np.zeros((size, self.matrix.shape[1]), dtype=np.float32)
        matrix[: len(live)] = self.matrix[live]
        codes = np.zeros((self.codes.shape[0], size), dtype=np.uint64)
        codes[:, : len(live)] = self.codes[:, live]
        self.matrix, self.codes = matrix, codes
        self.keys = [self.keys[i] for i in live]
        self.polarities = [self.polarities[i] for i in live]
        self.rows = {k: i for i, k in enumerate(self.keys) if k is not None}
        self.blank = 0

    def candidates(self, vector: np.ndarray, codes: SignCodes) -> np.ndarray | None:
        """The rows worth scoring exactly: all of them (None) in a small scope; else the
        ``CANDIDATES`` nearest by Hamming distance."""
        n = len(self.keys)
        if n <= max(EXACT_ROWS, 2 * CANDIDATES):
            return None
        code = codes(vector)[0]
        diff = np.empty(n, dtype=np.uint64)
        dist = np.bitwise_count(np.bitwise_xor(self.codes[0, :n], code[0], out=diff))
        dist = dist.astype(np.uint16)
        for w in range(1, len(code)):
            dist += np.bitwise_count(np.bitwise_xor(self.codes[w, :n], code[w], out=diff))
        # The cut estimated from every 8th row (a partial sort of n distances with this many
        # ties costs ten times the whole distance pass); rows at the cut fill up what the
        # rows below it leave.
        sample = dist[::8]
        k = CANDIDATES * len(sample) // n
        cut = int(np.partition(sample, k)[k])
        rows = np.flatnonzero(dist <= cut)
        if len(rows) <= 2 * CANDIDATES:
            return rows
        below = np.flatnonzero(dist < cut)
        tied = np.flatnonzero(dist == cut)[: max(0, CANDIDATES - len(below))]
        return np.concatenate([below, tied])

    def __len__(self) -> int:
        return len(self.rows)


class SemanticCache:
    """In-process index of cached queries' vectors; answers themselves live in the cache.

    Bounded by ``max_entries`` over all scopes (the least recently added go first). Adding
    writes one row, so lookups and writes interleave at the cost of a lookup alone. A lookup
    scores every row of a scope up to ``EXACT_ROWS``; a larger scope is first narrowed to the
    ``CANDIDATES`` rows nearest by sign code, which are then scored exactly: the threshold is
    always checked on the true cosine, and the prefilter can only miss a match, never invent
    one (``evals.bench_semantic_cache`` measures how often it would miss)."""

    def __init__(self, threshold: float = 0.88, max_entries: int = 10_000) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self._order: OrderedDict[str, str] = OrderedDict()  # key -> scope, oldest first
        self._scopes: dict[str, _Scope] = {}
        self._codes: SignCodes | None = None  # made with the first vector's dimension

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: str, scope: str, vector: np.ndarray, query: str) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        old = self._order.pop(key, None)
        if old is not None and old != scope:
            self._drop(key, old)
        self._order[key] = scope
        codes = self._sign_codes(vector.shape[-1])
        target = self._scopes.get(scope)
        if target is None:
            target = self._scopes[scope] = _Scope(vector.shape[-1], codes)
        target.put(key, vector, codes(vector)[0], polarity(query))
        while len(self._order) > self.max_entries:
            oldest, where = self._order.popitem(last=False)
            self._drop(oldest, where)

    def _sign_codes(self, dim: int) -> SignCodes:
        if self._codes is None:
            self._codes = SignCodes(dim)
        elif self._codes.planes.shape[0] != dim:
            raise ValueError(f"a vector of dimension {dim}; the cache holds "
                             f"{self._codes.planes.shape[0]}")
        return self._codes

    def _drop(self, key: str, scope: str) -> None:
        target = self._scopes[scope]
        target.drop(key)
        if not len(target):
            del self._scopes[scope]

    def lookup(self, scope: str, vector: np.ndarray, query: str) -> str | None:
        """The key of the closest cached query in scope with the same polarity, if close enough."""
        target = self._scopes.get(scope)
        if target is None:
            return None
        vector = np.asarray(vector, dtype=np.float32)
        rows = target.candidates(vector, self._sign_codes(vector.shape[-1]))
        sims = (target.matrix[: len(target.keys)] if rows is None else target.matrix[rows]) @ vector
        best = min(5, len(sims))
        top = np.argpartition(-sims, best - 1)[:best]
        want = polarity(query)
        for i in top[np.argsort(-sims[top])]:
            if sims[i] < self.threshold:
                return None
            row = int(i) if rows is None else int(rows[i])
            if target.keys[row] is not None and target.polarities[row] == want:
                return target.keys[row]
        return None

    def clear(self) -> None:
        self._order.clear()
        self._scopes.clear()

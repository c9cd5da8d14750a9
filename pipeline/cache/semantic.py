"""Semantic cache: a hit when a new query means the same as a cached one.

Same intent and filter scope, cosine of the shared query embedding above a threshold, and the
same *polarity*: embeddings put "enable 2FA" and "disable 2FA" close together, so a query is
only matched to a cached one whose antonym choices and negations agree.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
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


def polarity(text: str) -> tuple[tuple[int, ...], int]:
    """For each antonym group: 0 absent, 1 first side, 2 second side (3 both); negation parity."""
    words = set(_WORD.findall(text.lower()))
    sides = []
    for first, second in ANTONYMS:
        sides.append((1 if words & first else 0) | (2 if words & second else 0))
    return tuple(sides), len(words & NEGATIONS) % 2


class _Scope:
    """One scope's vectors in a matrix that grows by doubling: an add writes one row (no
    rebuild), an eviction blanks its row; blanks are compacted away when they are half."""

    def __init__(self, dim: int) -> None:
        self.matrix = np.zeros((16, dim), dtype=np.float32)
        self.keys: list[str | None] = []
        self.polarities: list[tuple] = []
        self.rows: dict[str, int] = {}
        self.blank = 0

    def put(self, key: str, vector: np.ndarray, pol: tuple) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.keys)
            if row == len(self.matrix):
                self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
            self.keys.append(key)
            self.polarities.append(pol)
        self.matrix[row] = vector
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
        self.matrix = matrix
        self.keys = [self.keys[i] for i in live]
        self.polarities = [self.polarities[i] for i in live]
        self.rows = {k: i for i, k in enumerate(self.keys) if k is not None}
        self.blank = 0

    def __len__(self) -> int:
        return len(self.rows)


class SemanticCache:
    """In-process index of cached queries' vectors; answers themselves live in the cache.

    Bounded by ``max_entries`` over all scopes (the least recently added go first). Adding
    writes one row, so lookups and writes interleave at the cost of a lookup alone: a matrix
    product over the scope's rows and a partial sort of the best few."""

    def __init__(self, threshold: float = 0.88, max_entries: int = 10_000) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self._order: OrderedDict[str, str] = OrderedDict()  # key -> scope, oldest first
        self._scopes: dict[str, _Scope] = {}

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: str, scope: str, vector: np.ndarray, query: str) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        old = self._order.pop(key, None)
        if old is not None and old != scope:
            self._drop(key, old)
        self._order[key] = scope
        target = self._scopes.get(scope)
        if target is None:
            target = self._scopes[scope] = _Scope(vector.shape[-1])
        target.put(key, vector, polarity(query))
        while len(self._order) > self.max_entries:
            oldest, where = self._order.popitem(last=False)
            self._drop(oldest, where)

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
        sims = target.matrix[: len(target.keys)] @ vector
        best = min(5, len(sims))
        top = np.argpartition(-sims, best - 1)[:best]
        want = polarity(query)
        for i in top[np.argsort(-sims[top])]:
            if sims[i] < self.threshold:
                return None
            if target.keys[i] is not None and target.polarities[i] == want:
                return target.keys[i]
        return None

    def clear(self) -> None:
        self._order.clear()
        self._scopes.clear()

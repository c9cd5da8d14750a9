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


class SemanticCache:
    """In-process index of cached queries' vectors; answers themselves live in the cache."""

    def __init__(self, threshold: float = 0.88, max_entries: int = 10_000) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, np.ndarray, tuple]] = OrderedDict()
        self._matrix: dict[str, tuple[np.ndarray, list[str]]] = {}  # scope -> vectors, keys

    def add(self, key: str, scope: str, vector: np.ndarray, query: str) -> None:
        self._entries[key] = (scope, np.asarray(vector, dtype=np.float32), polarity(query))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            _, (old_scope, _, _) = self._entries.popitem(last=False)
            self._matrix.pop(old_scope, None)
        self._matrix.pop(scope, None)  # rebuilt lazily on the next lookup in this scope

    def lookup(self, scope: str, vector: np.ndarray, query: str) -> str | None:
        """The key of the closest cached query in scope with the same polarity, if close enough."""
        built = self._matrix.get(scope)
        if built is None:
            keys = [k for k, (s, _, _) in self._entries.items() if s == scope]
            if not keys:
                return None
            built = self._matrix[scope] = (np.stack([self._entries[k][1] for k in keys]), keys)
        matrix, keys = built
        sims = matrix @ vector
        want = polarity(query)
        for i in np.argsort(-sims)[:5]:
            if sims[i] < self.threshold:
                return None
            entry = self._entries.get(keys[i])
            if entry is not None and entry[2] == want:
                return keys[i]
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._matrix.clear()

"""Value types shared by every retrieval backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# How a store searches: BM25, dense, BM25 candidates re-ranked densely, or both lists fused.
Mode = Literal["bm25", "dense", "bm25_then_dense", "fusion"]


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


# Not frozen, though never changed: frozen costs ~1 us per object made (hot path).
@dataclass(slots=True)
class Hit:
    id: str
    score: float
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 4),
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
        }

    def brief(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "score": round(self.score, 4)}

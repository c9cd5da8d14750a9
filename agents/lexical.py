"""A lexical intent classifier: BM25 nearest neighbours over example utterances.

It needs no model at all, so it is the dependency-free baseline and the cheap fallback of the
embedding classifier. Confidence is the winning label's share of the neighbours' score mass,
damped when even the best match is weak, so out-of-scope queries stay low-confidence.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ragpacer.pipeline.core.errors import IntentDataError
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.types import Document


def demo_intents() -> Path:
    return Path(str(resources.files("ragpacer.pipeline") / "demo" / "intents.csv"))


def read_intents(path: Path) -> list[tuple[str, str]]:
    """Rows of ``text,label`` with a header; errors name the file and line."""
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntentDataError(f"{path}: not UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise IntentDataError(f"cannot read {path}: {exc}") from exc
    reader = csv.reader(raw.splitlines())
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] not in (
        ["text", "label"],
        ["text", "category"],
    ):
        raise IntentDataError(f"{path}:1: the header must be 'text,label'")
    rows: list[tuple[str, str]] = []
    for n, row in enumerate(reader, 2):
        if len(row) < 2:
            raise IntentDataError(f"{path}:{n}: expected 2 columns, got {len(row)}")
        text, label = row[0].strip(), row[1].strip()
        if [text.lower(), label.lower()] in (["text", "label"], ["text", "category"]):
            raise IntentDataError(f"{path}:{n}: duplicate header line")
        if not label:
            raise IntentDataError(f"{path}:{n}: empty label")
        if not text:
            raise IntentDataError(f"{path}:{n}: empty text")
        rows.append((text, label))
    if not rows:
        raise IntentDataError(f"{path}: no examples")
    return rows


class LexicalIntentClassifier:
    def __init__(self, examples: Sequence[tuple[str, str]], *, k: int = 8, strong: float = 4.0):
        docs = [Document(id=str(i), text=t, metadata={"label": lab})
                for i, (t, lab) in enumerate(examples)]
        self.index = BM25Index(docs)
        self.labels = sorted({lab for _, lab in examples})
        self.k = k
        self.strong = strong

    def classify(self, query: str) -> tuple[str | None, float]:
        hits = self.index.search(query, self.k)
        if not hits:
            return None, 0.0
        mass: dict[str, float] = defaultdict(float)
        for h in hits:
            mass[h.metadata["label"]] += h.score
        label, best = max(mass.items(), key=lambda kv: kv[1])
        share = best / sum(mass.values())
        return label, share * min(1.0, hits[0].score / self.strong)

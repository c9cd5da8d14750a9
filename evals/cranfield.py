"""Reading the Cranfield collection (SMART format) and scoring rankings against its qrels."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ragpacer.retrieval.types import Document


def _records(path: Path) -> list[dict[str, str]]:
    records, field = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            records.append({"id": line[2:].strip()})
            field = None
        elif line[:2] in (".T", ".A", ".B", ".W"):
            field = line[1]
            records[-1][field] = ""
        elif field is not None:
            records[-1][field] += line + " "
    return records


def documents(folder: Path) -> list[Document]:
    return [Document(id=r["id"], title=r.get("T", "").strip(), text=r.get("W", "").strip())
            for r in _records(folder / "cran.all.1400")]


def queries(folder: Path) -> list[str]:
    """Query texts in file order: cranqrel numbers them 1..225 by position, not by .I id."""
    return [r.get("W", "").strip() for r in _records(folder / "cran.qry")]


def qrels(folder: Path) -> dict[int, dict[str, int]]:
    """query position (1-based) -> doc id -> gain (5 - grade for grades 1..4)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for line in (folder / "cranqrel").read_text().split("\n"):
        parts = line.split()
        if len(parts) >= 3:
            q, doc, grade = int(parts[0]), parts[1], int(parts[2])
            if 1 <= grade <= 4:
                out[q][doc] = 5 - grade
    return dict(out)


def ndcg(ranked: list[str], gains: dict[str, int], k: int = 10) -> float:
    dcg = sum(gains.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranked: list[str], gains: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(gains)) / len(gains) if gains else 0.0

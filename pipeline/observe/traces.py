"""Trace review: read spans back (JSONL sink or Langfuse's public API) and summarise them."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    spans = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    spans.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: skip it, keep the rest
    return spans


def read_langfuse(host: str, public_key: str, secret_key: str, limit: int = 100) -> list[dict]:
    """Observations from Langfuse's public API, mapped to the JSONL span shape."""
    r = httpx.get(f"{host.rstrip('/')}/api/public/observations", params={"limit": limit},
                  auth=(public_key, secret_key), timeout=10)
    r.raise_for_status()
    spans = []
    for o in r.json().get("data", []):
        meta = (o.get("metadata") or {}).get("attributes") or o.get("metadata") or {}
        spans.append({"trace_id": o.get("traceId"), "span_id": o.get("id"),
                      "parent_id": o.get("parentObservationId"), "name": o.get("name"),
                      "start_ns": None, "end_ns": None, "attributes": meta})
    return spans


def stage_rows(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage span: trace_id, stage, elapsed_ms, budget_ms, outcome, fallback."""
    # Each trace's root span start, looked up once per call (waterfall offsets).
    roots = {s["trace_id"]: s["start_ns"] for s in spans if s.get("parent_id") is None}
    rows = []
    for s in spans:
        a = s.get("attributes") or {}
        if not str(s.get("name", "")).startswith("stage."):
            continue
        rows.append({"trace_id": s["trace_id"], "stage": s["name"][6:],
                     "elapsed_ms": float(a.get("elapsed_ms", 0.0)),
                     "budget_ms": float(a.get("budget_ms", 0.0)),
                     "offset_ms": ((s["start_ns"] - (roots.get(s["trace_id"]) or 0)) / 1e6
                                   if s.get("start_ns") else 0.0),
                     "outcome": a.get("outcome", ""), "fallback": a.get("fallback") or ""})
    return rows


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_stage[r["stage"]].append(r)
    out = []
    for stage, rs in by_stage.items():
        ms = [r["elapsed_ms"] for r in rs]
        out.append({
            "stage": stage, "n": len(rs), "p50_ms": _pct(ms, 0.5), "p95_ms": _pct(ms, 0.95),
            "p99_ms": _pct(ms, 0.99),
            "breach_rate": sum(r["outcome"] in ("timeout", "skipped") for r in rs) / len(rs),
            "fallback_rate": sum(bool(r["fallback"]) for r in rs) / len(rs)})
    return out


def slowest(spans: list[dict[str, Any]], n: int = 5) -> list[tuple[dict, list[dict]]]:
    roots = [s for s in spans if s.get("parent_id") is None and s.get("end_ns")]
    roots.sort(key=lambda s: s["end_ns"] - s["start_ns"], reverse=True)
    rows = stage_rows(spans)
    return [(r, [x for x in rows if x["trace_id"] == r["trace_id"]]) for r in roots[:n]]


def dataframe(path: Path) -> Any:
    """Stage rows as a pandas DataFrame, for notebooks (pandas must be installed)."""
    import pandas as pd

    return pd.DataFrame(stage_rows(read_jsonl(path)))

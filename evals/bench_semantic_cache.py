"""Semantic-cache lookups while writes interleave, at 10,000 and 100,000 entries in one scope,
and how often the sign-code prefilter of large scopes misses what a full scan finds.

Rerun:  .venv/bin/python -m evals.bench_semantic_cache [--lookups 2000] [--data-dir ../shared/data]

Each step adds one entry and looks one query up, as a busy server does. Baselines in the same
run: the same lookups when every add makes the scope's matrix be rebuilt from its entries
(what the index did first), and a full scan of every row (what it did before the prefilter).

Vectors are clustered like a help centre's queries (topics of paraphrases: cosine ~0.7 within
a topic), and half the probes are near-duplicates of a stored entry (cosine ~0.9, above the
threshold), so the prefilter is tested where rows crowd each other. With Banking77 present,
its 10,003 training questions are embedded with the shipped embedder and its 3,080 test
questions looked up: the prefilter's answer against the full scan's, on real queries.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evals.common import percentiles, save
from ragpacer.pipeline.cache import semantic
from ragpacer.pipeline.cache.semantic import SemanticCache

DIM = 384
QUERY = "what does a transfer cost"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, topics: np.ndarray) -> np.ndarray:
    """Rows around random topics, cosine ~0.7 to their topic's other rows."""
    picks = topics[rng.integers(0, len(topics), n)]
    return _unit(picks + 0.65 * _unit(rng.normal(size=(n, DIM))))


def _near(rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
    """A paraphrase of each row: cosine ~0.92 to it."""
    return _unit(rows + 0.42 * _unit(rng.normal(size=rows.shape)))


def _filled(vectors: np.ndarray) -> SemanticCache:
    cache = SemanticCache(threshold=0.88, max_entries=len(vectors) + 10**6)
    for i, v in enumerate(vectors):
        cache.add(f"k{i}", "scope", v, QUERY)
    return cache


def _full_scan(cache: SemanticCache, vector: np.ndarray, query: str = QUERY) -> str | None:
    """The lookup without the prefilter: every row scored."""
    saved = semantic.EXACT_ROWS
    semantic.EXACT_ROWS = 1 << 62
    try:
        return cache.lookup("scope", vector, query)
    finally:
        semantic.EXACT_ROWS = saved


def interleaved(cache: SemanticCache, new: np.ndarray, probes: np.ndarray,
                lookup: Callable[[np.ndarray], str | None],
                rebuild: bool = False) -> tuple[list[float], list[str | None]]:
    lookups, found = [], []
    for i in range(len(probes)):
        t0 = time.perf_counter()
        cache.add(f"n{i}", "scope", new[i], QUERY)
        if rebuild:  # the first index: the scope's matrix stacked again after an add
            target = cache._scopes["scope"]
            target.matrix = np.stack([target.matrix[r] for r in range(len(target.keys))])
            target.codes = target.codes[:, : len(target.keys)].copy()
        t1 = time.perf_counter()
        found.append(lookup(probes[i]))
        t2 = time.perf_counter()
        lookups.append((t2 - t1) * 1000.0 + (t1 - t0) * 1000.0 * rebuild)
    return lookups, found


def synthetic(entries: int, steps: int, out: dict) -> None:
    rng = np.random.default_rng(entries)
    topics = _unit(rng.normal(size=(max(entries // 50, 10), DIM)))
    stored = _clustered(rng, entries, topics)
    cache = _filled(stored)
    new = _clustered(rng, steps, topics)
    # Half the probes paraphrase a stored row, half are new questions of a known topic.
    probes = np.where((np.arange(steps) % 2 == 0)[:, None],
                      _near(rng, stored[rng.integers(0, entries, steps)]),
                      _clustered(rng, steps, topics))
    variants: list[tuple[str, Callable[[np.ndarray], str | None], bool]] = [
        ("full scan", lambda v: _full_scan(cache, v), False),
        ("sign-code prefilter" if entries > semantic.EXACT_ROWS else "shipped (full scan)",
         lambda v: cache.lookup("scope", v, QUERY), False)]
    if entries <= 10_000:
        variants.insert(0, ("rebuild on add", lambda v: _full_scan(cache, v), True))
    results = {}
    for name, lookup, rebuild in variants:
        n = min(steps, 300) if rebuild else steps
        # Every variant sees the same adds: a fresh copy of the filled cache each time.
        cache = _filled(stored)
        times, found = interleaved(cache, new[:n], probes[:n], lookup, rebuild)
        results[name] = found
        row = f"{entries:,} entries, {name}"
        p = percentiles(times)
        out["rows"][row] = {"lookup": p}
        print(f"{row:44} {p['p50']:7.3f} {p['p95']:7.3f} {p['p99']:7.3f}")
    names = list(results)
    exact, shipped = results["full scan"], results[names[-1]]
    out["agreement"][f"{entries:,} synthetic"] = _agreement(exact, shipped)


def _agreement(exact: list[str | None], shipped: list[str | None]) -> dict:
    """Missed: the full scan found a match the shipped lookup did not. Another match: both
    found one above the threshold, not the same row (duplicates and near-ties)."""
    pairs = list(zip(exact, shipped, strict=True))
    out = {"probes": len(exact), "full_scan_hits": sum(k is not None for k in exact),
           "missed": sum(a is not None and b is None for a, b in pairs),
           "another_match": sum(None not in (a, b) and a != b for a, b in pairs),
           "false_hits": sum(a is None and b is not None for a, b in pairs)}
    print(f"  the full scan matched {out['full_scan_hits']} of {out['probes']} probes; the "
          f"shipped lookup missed {out['missed']}, matched another row above the threshold "
          f"{out['another_match']} times, matched where the scan did not {out['false_hits']}")
    return out


def banking77(data_dir: Path, out: dict) -> None:
    import csv

    from ragpacer.pipeline.core.settings import load_settings
    from ragpacer.retrieval.embedder import Embedder
    from ragpacer.retrieval.embedder_prepare import embedder_dir

    folder = data_dir / "banking77"
    if not (folder / "train.csv").exists():
        print(f"Banking77 not found under {data_dir}: real-query agreement not measured")
        return
    texts = {}
    for part in ("train", "test"):
        with open(folder / f"{part}.csv", newline="") as f:
            texts[part] = [r["text"] for r in csv.DictReader(f)]
    embedder = Embedder(embedder_dir(load_settings(environ={}).home), threads=2)
    vectors = {part: np.concatenate([embedder.embed(t[i:i + 256])
                                     for i in range(0, len(t), 256)])
               for part, t in texts.items()}
    cache = SemanticCache(threshold=0.88, max_entries=10**6)
    for i, (text, v) in enumerate(zip(texts["train"], vectors["train"], strict=True)):
        cache.add(f"k{i}", "scope", v, text)
    exact, shipped = [], []
    for text, v in zip(texts["test"], vectors["test"], strict=True):
        shipped.append(cache.lookup("scope", v, text))
        exact.append(_full_scan(cache, v, text))
    print(f"Banking77, {len(texts['train']):,} entries, {len(exact):,} test questions:")
    out["agreement"]["banking77"] = {"entries": len(texts["train"]),
                                     **_agreement(exact, shipped)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    out: dict = {"lookups": args.lookups, "dim": DIM, "threshold": 0.88,
                 "exact_rows": semantic.EXACT_ROWS, "code_bits": semantic.CODE_BITS,
                 "candidates": semantic.CANDIDATES, "rows": {}, "agreement": {}}
    print(f"{'ms per lookup (writes interleaved)':44} {'p50':>7} {'p95':>7} {'p99':>7}")
    for entries in (10_000, 100_000):
        synthetic(entries, args.lookups, out)
    banking77(args.data_dir, out)
    print(f"saved {save('bench_semantic_cache', out)}")


if __name__ == "__main__":
    main()

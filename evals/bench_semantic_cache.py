"""Semantic-cache lookups while writes interleave, at 10,000 and 100,000 entries in one scope.

Rerun:  .venv/bin/python -m evals.bench_semantic_cache [--lookups 2000]

Each step adds one entry and looks one query up, as a busy server does. Baseline in the same
run: the same lookups when every add makes the scope's matrix be rebuilt from its entries
(what the index did before it wrote rows in place).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from evals.common import percentiles, save
from ragpacer.pipeline.cache.semantic import SemanticCache

DIM = 384


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _filled(entries: int, rng: np.random.Generator) -> SemanticCache:
    cache = SemanticCache(threshold=0.9, max_entries=entries)
    for i, v in enumerate(_unit(rng, entries)):
        cache.add(f"k{i}", "scope", v, "what does a transfer cost")
    return cache


def interleaved(cache: SemanticCache, steps: int, rng: np.random.Generator,
                rebuild: bool) -> tuple[list[float], list[float]]:
    adds, lookups = [], []
    new, probes = _unit(rng, steps), _unit(rng, steps)
    for i in range(steps):
        t0 = time.perf_counter()
        cache.add(f"n{i}", "scope", new[i], "what does a transfer cost")
        if rebuild:  # the old index: the scope's matrix stacked again after an add
            target = cache._scopes["scope"]
            target.matrix = np.stack([target.matrix[r] for r in range(len(target.keys))])
        t1 = time.perf_counter()
        cache.lookup("scope", probes[i], "what does a transfer cost")
        t2 = time.perf_counter()
        adds.append((t1 - t0) * 1000.0)
        lookups.append((t2 - t1) * 1000.0 + (t1 - t0) * 1000.0 * rebuild)
    return adds, lookups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookups", type=int, default=2000)
    n = ap.parse_args().lookups
    out: dict = {"lookups": n, "dim": DIM, "rows": {}}
    print(f"{'ms per lookup (writes interleaved)':44} {'p50':>7} {'p95':>7} {'p99':>7}")
    for entries in (10_000, 100_000):
        for rebuild in (True, False):
            if rebuild and entries > 10_000:
                continue  # the rebuild baseline at 100k takes minutes
            rng = np.random.default_rng(entries)
            cache = _filled(entries, rng)
            adds, lookups = interleaved(cache, n if not rebuild else min(n, 300), rng, rebuild)
            name = f"{entries:,} entries, {'rebuild on add' if rebuild else 'rows in place'}"
            p = percentiles(lookups)
            out["rows"][name] = {"lookup": p, "add": percentiles(adds)}
            print(f"{name:44} {p['p50']:7.3f} {p['p95']:7.3f} {p['p99']:7.3f}")
    print(f"saved {save('bench_semantic_cache', out)}")


if __name__ == "__main__":
    main()

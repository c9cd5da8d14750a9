"""Semantic-cache precision and recall on labelled paraphrase and negation pairs.

Rerun:  .venv/bin/python -m evals.eval_semantic_cache
Pairs: evals/data/semantic_cache_pairs.csv (cached query, new query, same meaning 1/0).
Reported for several thresholds, with and without the polarity guard.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from evals.common import save
from ragpacer.pipeline.cache.semantic import SemanticCache
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir

PAIRS = Path(__file__).resolve().parent / "data" / "semantic_cache_pairs.csv"


def score(pairs, vectors, threshold: float, guard: bool) -> dict:  # type: ignore[no-untyped-def]
    tp = fp = fn = tn = 0
    for i, (cached, query, same) in enumerate(pairs):
        cache = SemanticCache(threshold=threshold)
        cache.add("k", "scope", vectors[2 * i], cached if guard else "")
        hit = cache.lookup("scope", vectors[2 * i + 1], query if guard else "") is not None
        tp += hit and same
        fp += hit and not same
        fn += (not hit) and same
        tn += (not hit) and not same
    precision = tp / (tp + fp) if tp + fp else 1.0
    return {"threshold": threshold, "guard": guard, "precision": precision,
            "recall": tp / (tp + fn), "false_hits": fp, "tp": tp, "tn": tn}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=Path(".ragpacer"))
    args = ap.parse_args()
    with PAIRS.open() as f:
        pairs = [(r["cached"], r["query"], r["same"] == "1") for r in csv.DictReader(f)]
    emb = Embedder(embedder_dir(args.home))
    vectors = emb.embed_many([t for c, q, _ in pairs for t in (c, q)])
    rows = [score(pairs, vectors, t, g) for t in (0.75, 0.8, 0.85, 0.88, 0.9, 0.95)
            for g in (False, True)]
    print(f"{len(pairs)} pairs ({sum(s for *_, s in pairs)} same meaning)")
    print(f"{'threshold':>9} {'guard':>6} {'precision':>9} {'recall':>7} {'false hits':>10}")
    for r in rows:
        print(f"{r['threshold']:9.2f} {r['guard']!s:>6} {r['precision']:9.3f} {r['recall']:7.3f} "
              f"{r['false_hits']:10d}")
    print("saved", save("eval_semantic_cache", {"pairs": len(pairs), "results": rows}))


if __name__ == "__main__":
    main()

"""Retrieval quality on Cranfield for every search mode, and latency per mode.

Rerun:  .venv/bin/python -m evals.eval_retrieval [--data-dir ../shared/data]
Graded nDCG@10 (gain = 5 - grade) and Recall@100, INT8 and fp32 embeddings, candidates
N = 50/100/200 for bm25_then_dense. Writes evals/results/eval_retrieval.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from evals import cranfield
from evals.common import percentiles, save
from retrieval.bm25 import BM25Index
from retrieval.embedder import Embedder
from retrieval.embedder_prepare import embedder_dir
from retrieval.hybrid import HybridIndex


def evaluate_cranfield(data_dir: Path, home: Path, variants: list[str],
             queries: int | None = None) -> dict[str, dict]:
    """nDCG@10 / Recall@100 / latency per mode; ``queries`` limits the run for a quick look."""
    args = argparse.Namespace(data_dir=data_dir, home=home, variants=variants)
    folder = args.data_dir / "cranfield"
    docs, qs, rel = cranfield.documents(folder), cranfield.queries(folder), cranfield.qrels(folder)
    if queries is not None:
        rel = {q: r for q, r in rel.items() if q <= queries}
    bm25 = BM25Index(docs)
    rows: dict[str, dict] = {}
    for variant in args.variants:
        emb = Embedder(embedder_dir(args.home), variant=variant, threads=2, max_tokens=256)
        t0 = time.perf_counter()
        vectors = emb.embed_many([f"{d.title}. {d.text}" for d in docs])
        qv = emb.embed([q for q in qs])
        print(f"{variant}: embedded {len(docs)} docs in {time.perf_counter() - t0:.1f} s",
              flush=True)
        index = HybridIndex(bm25, vectors)
        configs = [("bm25", 100), ("dense", 100), ("fusion", 100)] + [
            ("bm25_then_dense", n) for n in (50, 100, 200)]
        for mode, n in configs:
            name = f"{mode}" + (f"@{n}" if mode == "bm25_then_dense" else "")
            if variant != args.variants[0] and mode == "bm25":
                continue
            nd, rc, lat = [], [], []
            for qi, (q, v) in enumerate(zip(qs, qv, strict=True), 1):
                if qi not in rel:
                    continue
                t0 = time.perf_counter()
                hits = index.search(q, v, k=100, mode=mode, candidates=n)
                lat.append((time.perf_counter() - t0) * 1000)
                ranked = [h.id for h in hits]
                nd.append(cranfield.ndcg(ranked, rel[qi]))
                rc.append(cranfield.recall(ranked, rel[qi]))
            key = name if mode == "bm25" else f"{name} ({variant})"
            rows[key] = {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rc)),
                         "latency_ms": percentiles(lat), "queries": len(nd)}
            print(f"{key:28} nDCG@10 {rows[key]['ndcg@10']:.3f}  R@100 "
                  f"{rows[key]['recall@100']:.3f}  p50 {rows[key]['latency_ms']['p50']:.2f} ms",
                  flush=True)
    return rows


def evaluate_edge(data_dir: Path, home: Path, modes: tuple[str, ...] = ("fusion",),
                  queries: int | None = None) -> dict[str, dict]:
    """The shipped retrieval path: Cranfield through `ragpacer ingest` (chunks, sparse BM25
    weights, INT8 embeddings) into a Qdrant Edge shard, queried as the retrieval stage does."""
    import json
    import tempfile

    from retrieval.ingest import current_index, ingest
    from retrieval.stores.edge import EdgeStore

    folder = data_dir / "cranfield"
    docs, qs, rel = cranfield.documents(folder), cranfield.queries(folder), cranfield.qrels(folder)
    if queries is not None:
        rel = {q: r for q, r in rel.items() if q <= queries}
    emb = Embedder(embedder_dir(home), threads=2)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "cranfield.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text})
                                  + "\n" for d in docs))
        ingest(corpus, Path(tmp) / "index", emb, [])
        store = EdgeStore.open(current_index(Path(tmp) / "index"))
        try:
            for mode in modes:
                nd, rc, lat = [], [], []
                for qi, q in enumerate(qs, 1):
                    if qi not in rel:
                        continue
                    v = emb.embed_one(q)
                    t0 = time.perf_counter()
                    hits = store.search(q, v, 200, None, mode, 100)
                    lat.append((time.perf_counter() - t0) * 1000)
                    ranked = list(dict.fromkeys(h.id.split("#", 1)[0] for h in hits))
                    nd.append(cranfield.ndcg(ranked, rel[qi]))
                    rc.append(cranfield.recall(ranked, rel[qi]))
                key = f"edge {mode} (int8)"
                rows[key] = {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rc)),
                             "latency_ms": percentiles(lat), "queries": len(nd)}
                print(f"{key:28} nDCG@10 {rows[key]['ndcg@10']:.3f}  R@100 "
                      f"{rows[key]['recall@100']:.3f}  p50 {rows[key]['latency_ms']['p50']:.2f} ms",
                      flush=True)
        finally:
            store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--home", type=Path, default=Path(".ragpacer"))
    ap.add_argument("--variants", nargs="+", default=["int8", "fp32"])
    args = ap.parse_args()
    rows = evaluate_cranfield(args.data_dir, args.home, args.variants)
    rows.update(evaluate_edge(args.data_dir, args.home, ("bm25", "dense", "fusion")))
    print("saved", save("eval_retrieval", {"results": rows}))


if __name__ == "__main__":
    main()

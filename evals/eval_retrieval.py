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
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.embedder import DOCUMENT_TOKENS, Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir
from ragpacer.retrieval.hybrid import HybridIndex


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


# (mode, fusion, feedback docs, feedback terms); the first is the shipped default.
EDGE_CONFIGS = (("fusion", "dbsf", 1, 20), ("fusion", "rrf", 1, 20), ("fusion", "dbsf", 0, 0),
                ("fusion", "rrf", 0, 0), ("bm25", "rrf", 1, 20), ("bm25", "rrf", 0, 0),
                ("dense", "rrf", 0, 0))


def evaluate_edge(data_dir: Path, home: Path,
                  configs: tuple[tuple[str, str, int, int], ...] = EDGE_CONFIGS,
                  queries: int | None = None) -> dict[str, dict]:
    """The shipped retrieval path: Cranfield through `ragpacer ingest` (chunks, sparse BM25
    weights, INT8 embeddings of up to DOCUMENT_TOKENS) into a Qdrant Edge shard, queried as
    the retrieval stage does: pseudo-relevance feedback from the in-memory BM25 index, the
    query embedded with 128 tokens, BM25 and dense fused."""
    import json
    import tempfile

    from ragpacer.retrieval.ingest import current_index, ingest
    from ragpacer.retrieval.stores.edge import EdgeStore

    folder = data_dir / "cranfield"
    docs, qs, rel = cranfield.documents(folder), cranfield.queries(folder), cranfield.qrels(folder)
    if queries is not None:
        rel = {q: r for q, r in rel.items() if q <= queries}
    doc_embedder = Embedder(embedder_dir(home), threads=2, max_tokens=DOCUMENT_TOKENS)
    query_embedder = Embedder(embedder_dir(home), threads=2)
    vectors = {qi: query_embedder.embed_one(q) for qi, q in enumerate(qs, 1) if qi in rel}
    bm25 = BM25Index(docs)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "cranfield.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text})
                                  + "\n" for d in docs))
        ingest(corpus, Path(tmp) / "index", doc_embedder, [])
        store = EdgeStore.open(current_index(Path(tmp) / "index"))
        try:
            for mode, fusion, fb_docs, fb_terms in configs:
                nd, rc, lat = [], [], []
                for qi, q in enumerate(qs, 1):
                    if qi not in rel:
                        continue
                    t0 = time.perf_counter()
                    sparse = bm25.feedback_terms(q, fb_docs, fb_terms) if fb_docs else q
                    hits = store.search(sparse, vectors[qi], 200, None, mode, 100, fusion)
                    lat.append((time.perf_counter() - t0) * 1000)
                    ranked = list(dict.fromkeys(h.id.split("#", 1)[0] for h in hits))
                    nd.append(cranfield.ndcg(ranked, rel[qi]))
                    rc.append(cranfield.recall(ranked, rel[qi]))
                key = f"edge {mode}" + (f" {fusion}" if mode == "fusion" else "") + (
                    f", feedback {fb_docs}/{fb_terms}" if fb_docs else "")
                rows[key] = {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rc)),
                             "latency_ms": percentiles(lat), "queries": len(nd)}
                print(f"{key:36} nDCG@10 {rows[key]['ndcg@10']:.4f}  R@100 "
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
    rows.update(evaluate_edge(args.data_dir, args.home))
    print("saved", save("eval_retrieval", {"results": rows}))


if __name__ == "__main__":
    main()

"""Retrieval latency at 10k and 100k documents on Qdrant Edge (excluding the embedding).

Rerun:  .venv/bin/python -m evals.bench_retrieval_scale [--sizes 10000 100000]
A synthetic corpus (Zipf-distributed words, random unit vectors: latency does not depend on
meaning). Baselines in the same run: rank-bm25 over all documents and exhaustive dense
numpy search. Also reports ingestion throughput and the index size on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.common import percentiles, save
from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.sparse import document_weights
from ragpacer.retrieval.stores.edge import EdgeStore
from ragpacer.retrieval.types import Document

PRODUCTS = ["cards", "loans", "savings", "transfers", "app", "security", "mortgages", "business"]


def corpus(n: int, rng: np.random.Generator) -> tuple[list[Document], np.ndarray, list[str]]:
    vocab = [f"w{i}" for i in range(20_000)]
    ranks = rng.zipf(1.2, size=(n, 60)) % len(vocab)
    docs = [Document(id=f"d{i}", title="", text=" ".join(vocab[j] for j in ranks[i]),
                     metadata={"product": PRODUCTS[i % len(PRODUCTS)]}) for i in range(n)]
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = [" ".join(vocab[j] for j in rng.zipf(1.3, size=4) % 2000) for _ in range(200)]
    return docs, vectors, queries


def run(n: int, rng: np.random.Generator) -> dict:
    docs, vectors, queries = corpus(n, rng)
    qv = rng.normal(size=(len(queries), 384)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    analyzer = Analyzer()
    tokenised = [analyzer(d.text) for d in docs]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = EdgeStore.create(Path(tmp) / "shard", 384, ["product"])
        sparse = document_weights(tokenised)
        for s in range(0, n, 2000):
            store.upsert(docs[s:s + 2000], vectors[s:s + 2000], sparse[s:s + 2000])
        store.shard.flush()
        store.shard.optimize()
        out["ingest_docs_per_s"] = n / (time.perf_counter() - t0)
        out["disk_mb"] = sum(p.stat().st_blocks * 512 for p in Path(tmp).rglob("*")
                             if p.is_file()) / 1e6
        flt = {"product": ("cards",)}
        for mode in ("fusion", "bm25_then_dense", "bm25", "dense"):
            times = []
            for q, v in zip(queries, qv, strict=True):
                t = time.perf_counter()
                store.search(q, v, 10, flt, mode, 100)
                times.append((time.perf_counter() - t) * 1000)
            out[mode] = percentiles(times)
        store.close()
    times = []
    for v in qv:
        t = time.perf_counter()
        scores = vectors @ v
        np.argpartition(-scores, 10)[:10]
        times.append((time.perf_counter() - t) * 1000)
    out["exhaustive_dense_numpy"] = percentiles(times)
    from rank_bm25 import BM25Okapi

    oracle = BM25Okapi(tokenised)
    times = []
    for q in queries[: 50 if n <= 10_000 else 10]:
        t = time.perf_counter()
        oracle.get_scores(analyzer(q))
        times.append((time.perf_counter() - t) * 1000)
    out["rank_bm25_all_docs"] = percentiles(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {str(n): run(n, rng) for n in args.sizes}
    for n, r in results.items():
        print(f"{n} docs: ingest {r['ingest_docs_per_s']:.0f} docs/s, {r['disk_mb']:.0f} MB")
        for k in ("fusion", "bm25_then_dense", "bm25", "dense", "exhaustive_dense_numpy",
                  "rank_bm25_all_docs"):
            p = r[k]
            print(f"  {k:24} p50 {p['p50']:8.3f} p95 {p['p95']:8.3f} p99 {p['p99']:8.3f} ms  "
                  f"(x{p['p50'] / r['fusion']['p50']:.1f} of fusion)")
    print("saved", save("bench_retrieval_scale", results))


if __name__ == "__main__":
    main()

"""Banking77 intent accuracy (INT8 vs fp32), latency, and micro-batching throughput.

Rerun:  .venv/bin/python -m evals.eval_intents [--data-dir ../shared/data] [--quick]
Needs `ragpacer models prepare` (the ONNX embedder). Writes evals/results/eval_intents.json
and, when matplotlib is installed, evals/results/banking77_confusion.png.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from evals.common import RESULTS, percentiles, save
from ragpacer.agents.intents import evaluate, train_head
from ragpacer.agents.lexical import read_intents
from ragpacer.retrieval.batcher import MicroBatcher
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir


def accuracy_for(variant: str, home: Path, train, test) -> tuple[dict, object, Embedder]:  # type: ignore[no-untyped-def]
    emb = Embedder(embedder_dir(home), variant=variant, threads=2)
    t0 = time.perf_counter()
    x = emb.embed_many([t for t, _ in train])
    s = emb.embed_many([t for t, _ in test])
    embed_s = time.perf_counter() - t0
    head = train_head(x, [lab for _, lab in train], emb.checksum)
    report = evaluate(head, s, [lab for _, lab in test], top_confusions=15)
    report["embed_s"] = embed_s
    return report, head, Embedder(embedder_dir(home), variant=variant, threads=1)


def single_latency(emb: Embedder, head, queries: list[str]) -> dict:  # type: ignore[no-untyped-def]
    times = []
    for q in queries:
        t0 = time.perf_counter()
        head.classify_vector(emb.embed_one(q))
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


async def concurrent(emb: Embedder, head, queries: list[str], callers: int,  # type: ignore[no-untyped-def]
                     batch: bool) -> dict:
    batcher = MicroBatcher(emb.embed, window_ms=2.0, max_batch=32) if batch else None
    queue = list(queries)
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            q = queue.pop()
            t0 = time.perf_counter()
            v = await batcher.embed(q) if batcher else emb.embed_one(q)
            head.classify_vector(v)
            latencies.append((time.perf_counter() - t0) * 1000)
            if not batcher:
                await asyncio.sleep(0)  # let the other callers in, as a server would

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(callers)))
    wall = time.perf_counter() - t0
    if batcher:
        batcher.close()
    return {"queries_per_s": len(queries) / wall, "latency_ms": percentiles(latencies),
            "mean_batch": float(np.mean(batcher.batches)) if batcher else 1.0}


def confusion_plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    worst = sorted(report["per_label_f1"].items(), key=lambda kv: kv[1])[:20]
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.barh([k for k, _ in worst], [v for _, v in worst])
    ax.set_xlabel("F1")
    ax.set_title("Banking77: 20 worst intents (INT8 MiniLM + softmax head)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def evaluate_banking77(data_dir: Path, home: Path, quick: bool = False,
             throughput: bool = True) -> dict:
    """Accuracy and latency for INT8 and fp32; ``quick`` uses 1,000 train / 500 test."""
    args = argparse.Namespace(data_dir=data_dir, home=home, quick=quick)
    train = read_intents(args.data_dir / "banking77" / "train.csv")
    test = read_intents(args.data_dir / "banking77" / "test.csv")
    if args.quick:
        rng = np.random.default_rng(0)
        train = [train[i] for i in rng.permutation(len(train))[:1000]]
        test = [test[i] for i in rng.permutation(len(test))[:500]]
    out: dict = {"n_train": len(train), "n_test": len(test)}
    heads = {}
    for variant in ("int8", "fp32"):
        report, head, emb = accuracy_for(variant, args.home, train, test)
        heads[variant] = (emb, head)
        out[variant] = {k: report[k] for k in ("accuracy", "macro_f1", "embed_s", "confused")}
        out[variant]["worst"] = sorted(report["per_label_f1"].items(), key=lambda kv: kv[1])[:10]
        out[variant]["single_query_ms"] = single_latency(emb, head, [t for t, _ in test[:500]])
        print(f"{variant}: accuracy {report['accuracy']:.2%} macro-F1 {report['macro_f1']:.2%} "
              f"single query p50 {out[variant]['single_query_ms']['p50']:.2f} ms", flush=True)
        if variant == "int8":
            RESULTS.mkdir(exist_ok=True)
            confusion_plot(report, RESULTS / "banking77_worst.png")
    out["heads"] = heads
    if not throughput:
        return out
    emb, head = heads["int8"]
    queries = [t for t, _ in test] * (1 if args.quick else 2)
    for callers in (1, 32):
        for batch in (False, True):
            r = asyncio.run(concurrent(emb, head, queries[: 2000], callers, batch))
            out[f"callers_{callers}_batch_{batch}"] = r
            print(f"{callers:2} callers, batching {'on ' if batch else 'off'}: "
                  f"{r['queries_per_s']:7.0f} q/s, p50 {r['latency_ms']['p50']:.2f} ms, "
                  f"p99 {r['latency_ms']['p99']:.2f} ms, mean batch {r['mean_batch']:.1f}",
                  flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--home", type=Path, default=Path(".ragpacer"))
    ap.add_argument("--quick", action="store_true", help="1,000 train / 500 test examples")
    args = ap.parse_args()
    out = evaluate_banking77(args.data_dir, args.home, args.quick)
    out.pop("heads")
    print(f"INT8 - fp32 accuracy: {(out['int8']['accuracy'] - out['fp32']['accuracy']) * 100:+.2f}"
          " points")
    print("saved", save("eval_intents", out))


if __name__ == "__main__":
    main()

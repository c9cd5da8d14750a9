"""TTFT and decode throughput of the LLM engines at 1, 4 and 16 concurrent requests.

Rerun:  .venv/bin/python -m evals.bench_llm [--rounds 3] [--tokens 64]
Engines compared in one run: vLLM bf16 KV cache, vLLM fp8 KV cache, llama.cpp on the GGUF Q4.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx

from evals.common import group_rss_mb, percentiles, save
from ragpacer.pipeline.core.settings import ManagedEngineSettings
from ragpacer.pipeline.llm.engine import EngineError, ManagedEngine
from ragpacer.pipeline.llm.prepare import prepare

PROMPT = [
    {"role": "system", "content": "You are the help-centre assistant of Pacer Bank."},
    {"role": "user", "content": "My card was declined abroad. What could be the reason and "
                                "what should I do? Explain step by step."},
]
ENGINES = {
    "vllm-bf16-kv": ManagedEngineSettings(kind="vllm", kv_cache_dtype="bfloat16", port=8190),
    "vllm-fp8-kv": ManagedEngineSettings(kind="vllm", kv_cache_dtype="fp8", port=8191),
    "vllm-int8-kv": ManagedEngineSettings(kind="vllm", kv_cache_dtype="int8_per_token_head",
                                          port=8193),
    "llamacpp-q4_1": ManagedEngineSettings(kind="llamacpp", port=8192),
}


async def one(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, int, float]:
    t0 = time.monotonic()
    ttft, n = None, 0
    body = {"model": "smollm2", "messages": PROMPT, "max_tokens": tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:") and '"content"' in line and line.find('"content":""') < 0:
                if ttft is None:
                    ttft = time.monotonic() - t0
                n += 1
    total = time.monotonic() - t0
    return (ttft or total) * 1000, n, total


async def level(url: str, concurrency: int, tokens: int, rounds: int) -> dict:
    ttfts, aggregates, per_stream = [], [], []
    async with httpx.AsyncClient(timeout=300) as client:
        await one(client, url, 8)  # warm the prefix cache and the code paths
        for _ in range(rounds):
            t0 = time.monotonic()
            results = await asyncio.gather(*(one(client, url, tokens)
                                             for _ in range(concurrency)))
            wall = time.monotonic() - t0
            ttfts += [r[0] for r in results]
            aggregates.append(sum(r[1] for r in results) / wall)
            per_stream += [(r[1] - 1) / (r[2] - r[0] / 1000) for r in results if r[1] > 1]
    return {"ttft_ms": percentiles(ttfts), "aggregate_tok_s": percentiles(aggregates),
            "stream_tok_s": percentiles(per_stream)}


def run_engine(name: str, cfg: ManagedEngineSettings, home: Path, args) -> dict:  # type: ignore[no-untyped-def]
    prepared = prepare(home, cfg.kind, print)
    engine = ManagedEngine(cfg, prepared, home, "smollm2")
    engine.start()
    startup = engine.wait_healthy(say=print)
    out = {"startup_s": startup, "levels": {}}
    try:
        for c in args.concurrency:
            out["levels"][str(c)] = asyncio.run(level(engine.base_url, c, args.tokens,
                                                      args.rounds))
            lv = out["levels"][str(c)]
            print(f"{name} c={c}: ttft p50 {lv['ttft_ms']['p50']:.0f} ms, aggregate "
                  f"{lv['aggregate_tok_s']['p50']:.0f} tok/s", flush=True)
        out["rss_mb"] = group_rss_mb(engine.proc.pid)
    finally:
        engine.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES))
    ap.add_argument("--home", type=Path, default=Path(".ragpacer"))
    args = ap.parse_args()
    results = {}
    for n in args.engines:
        try:
            results[n] = run_engine(n, ENGINES[n], args.home, args)
        except EngineError as exc:  # e.g. fp8 KV on a CPU without AVX-512
            print(f"{n}: skipped: {exc}")
    print(f"\n{'engine':15} {'start s':>8} {'RSS MB':>8} " + " ".join(
        f"{'c=' + str(c) + ' ttft/agg':>20}" for c in args.concurrency))
    for n, r in results.items():
        lv = r["levels"]
        cells = " ".join(
            f"{lv[str(c)]['ttft_ms']['p50']:>9.0f} /{lv[str(c)]['aggregate_tok_s']['p50']:>7.0f}"
            for c in args.concurrency)
        print(f"{n:15} {r['startup_s']:8.1f} {r['rss_mb']:8.0f} {cells}")
    print("saved", save("bench_llm", {"args": vars(args) | {"home": str(args.home)},
                                      "engines": results}))


if __name__ == "__main__":
    main()

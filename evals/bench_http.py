"""HTTP overhead on a cache hit at 1 and 32 concurrent clients, and the cost of tracing.

Rerun:  .venv/bin/python -m evals.bench_http [--n 2000]
Starts `ragpacer serve` as a separate process (external LLM, no tracing), warms one cache
entry, then measures client-side latency minus the pipeline's own elapsed time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx

from evals.common import percentiles, save
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.sdk import Pipeline
from tests.support.http import free_port

BODY = {"model": "ragpacer", "messages": [{"role": "user", "content": "how do I freeze my card"}]}


async def load(base: str, concurrency: int, n: int) -> dict:
    latencies, overheads = [], []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=BODY)
                ms = (time.perf_counter() - t0) * 1000
                extra = r.json()["ragpacer"]
                assert extra["cached"], extra
                latencies.append(ms)
                overheads.append(ms - extra["elapsed_ms"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latency_ms": percentiles(latencies), "http_overhead_ms": percentiles(overheads),
            "requests_per_s": n / wall}


async def tracing_cost(n: int) -> dict:
    out = {}
    for exporter in ("none", "otlp"):
        s = load_settings("ragpacer.yaml", environ={}, overrides={
            "llm": {"engine": "external"}, "cache": {"enabled": False},
            "tracing": {"exporter": exporter,
                        "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"}})
        p = Pipeline(s)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await p.arun("hello" if i % 2 else "thanks bye")  # template routes: no LLM
            times.append((time.perf_counter() - t0) * 1000)
        out[exporter] = percentiles(times[100:])
        await p.aclose()
    out["cost_ms_p50"] = out["otlp"]["p50"] - out["none"]["p50"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "RAGPACER_LLM__ENGINE": "external", "RAGPACER_TRACING__EXPORTER": "none"}
    server = subprocess.Popen([sys.executable, "-m", "ragpacer.pipeline.cli", "serve",
                               "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        httpx.post(f"{base}/v1/chat/completions", json=BODY, timeout=30)
        time.sleep(0.2)
        out = {f"c{c}": asyncio.run(load(base, c, args.n)) for c in (1, 32)}
    finally:
        server.terminate()
        server.wait(20)
    out["tracing"] = asyncio.run(tracing_cost(1000))
    for c in ("c1", "c32"):
        o = out[c]
        print(f"{c}: latency p50 {o['latency_ms']['p50']:.2f} p99 {o['latency_ms']['p99']:.2f} ms;"
              f" HTTP overhead p50 {o['http_overhead_ms']['p50']:.2f} p99 "
              f"{o['http_overhead_ms']['p99']:.2f} ms; {o['requests_per_s']:.0f} req/s")
    t = out["tracing"]
    print(f"tracing: p50 none {t['none']['p50']:.3f} ms, otlp {t['otlp']['p50']:.3f} ms, "
          f"cost {t['cost_ms_p50']:.3f} ms")
    print("saved", save("bench_http", out))


if __name__ == "__main__":
    main()

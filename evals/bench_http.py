"""HTTP overhead on a cache hit at 1 and 32 concurrent clients, and the cost of tracing.

Rerun:  .venv/bin/python -m evals.bench_http [--n 4000] [--rounds 10]
Starts `ragpacer serve` as a separate process (external LLM, no tracing), warms one cache
entry, then measures client-side latency minus the pipeline's own elapsed time. Baseline in
the same run: a bare Starlette handler returning a fixed body (evals/bare_starlette.py) under
the same uvicorn settings, at one client; the ratio of the two p50s is the HTTP layer's cost.
Then both applications in-process over ASGI, with no server or client: with the CPU caches
warm, and cold (8 MB walked before each request, as a client process on the same cores does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np
import uvloop

from evals.common import percentiles, save
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.sdk import Pipeline
from tests.support.http import free_port
from tests.support.otlp import Receiver

BODY = {"model": "ragpacer", "messages": [{"role": "user", "content": "how do I freeze my card"}]}


def started(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{args} did not start")


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
                extra.setdefault("elapsed_ms", 0.0)
                latencies.append(ms)
                overheads.append(ms - extra["elapsed_ms"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latency_ms": percentiles(latencies), "http_overhead_ms": percentiles(overheads),
            "requests_per_s": n / wall, "_latencies": latencies, "_overheads": overheads}


async def tracing_cost(n: int) -> dict:
    out = {}
    receiver = Receiver()  # a collector that accepts the spans, as a deployment has
    for exporter in ("none", "otlp"):
        s = load_settings("ragpacer.yaml", environ={}, overrides={
            "llm": {"engine": "external"}, "cache": {"enabled": False},
            "tracing": {"exporter": exporter,
                        "endpoint": f"http://127.0.0.1:{receiver.port}/v1/traces"}})
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


async def in_process(n: int) -> dict:
    """p50 µs of one hit through ragpacer's ASGI app and of the bare handler, called directly."""
    from evals.bare_starlette import app as bare_app
    from ragpacer.pipeline.serving.app import create_app

    s = load_settings("ragpacer.yaml", environ={}, overrides={
        "llm": {"engine": "external"}, "tracing": {"exporter": "none"}})
    pipeline = Pipeline(s)
    await pipeline.astart()
    apps = {"ragpacer": create_app(pipeline), "bare": bare_app}
    body = httpx.Request("POST", "http://x", json=BODY).content
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000), "headers": [
                 (b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        pass

    await apps["ragpacer"]({**scope, "state": {}}, receive, send)  # the entry to hit
    await pipeline.caching.drain()
    memory = np.zeros(1 << 20)  # 8 MB
    out: dict = {}
    for caches in ("warm", "cold"):
        for name, app in apps.items():
            times = []
            for i in range(n + 200):
                if caches == "cold":
                    memory += 1.0
                t0 = time.perf_counter()
                await app({**scope, "state": {}}, receive, send)
                if i >= 200:
                    times.append((time.perf_counter() - t0) * 1e6)
            out[f"{name}_{caches}_us_p50"] = statistics.median(times)
    assert pipeline.metrics.cache.get("exact") == 2 * (n + 200)  # every timed call a hit
    await pipeline.aclose()
    return out


def _merged(runs: list[dict]) -> dict:
    lat = [x for r in runs for x in r.pop("_latencies")]
    over = [x for r in runs for x in r.pop("_overheads")]
    return {"latency_ms": percentiles(lat), "http_overhead_ms": percentiles(over),
            "requests_per_s": sum(r["requests_per_s"] for r in runs) / len(runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    env = {**os.environ, "RAGPACER_LLM__ENGINE": "external", "RAGPACER_TRACING__EXPORTER": "none"}
    port, bare_port = free_port(), free_port()
    server = started(["ragpacer.pipeline.cli", "serve", "--port", str(port)], port, env)
    bare = started(["evals.bare_starlette", str(bare_port)], bare_port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        httpx.post(f"{base}/v1/chat/completions", json=BODY, timeout=30)
        time.sleep(0.2)
        out: dict = {}
        ratios = []
        # Short interleaved rounds, so drift on a shared machine hits both alike; the ratio
        # is the median of the rounds' ratios.
        for _ in range(args.rounds):
            for name, url in (("bare", f"http://127.0.0.1:{bare_port}"), ("c1", base)):
                run = asyncio.run(load(url, 1, args.n // args.rounds))
                out.setdefault(name, []).append(run)
            ratios.append(out["c1"][-1]["latency_ms"]["p50"] / out["bare"][-1]["latency_ms"]["p50"])
        out = {k: _merged(v) for k, v in out.items()}
        out["round_ratios_c1_to_bare_p50"] = ratios
        out["c32"] = _merged([asyncio.run(load(base, 32, args.n))])
    finally:
        for proc in (server, bare):
            proc.terminate()
            proc.wait(20)
    out["ratio_c1_to_bare_p50"] = statistics.median(out["round_ratios_c1_to_bare_p50"])
    out["tracing"] = asyncio.run(tracing_cost(1000))
    out["in_process"] = uvloop.run(in_process(3000))  # the loop `ragpacer serve` runs on
    spread = sorted(out["round_ratios_c1_to_bare_p50"])
    print(f"bare Starlette, 1 client: p50 {out['bare']['latency_ms']['p50']:.2f} ms; "
          f"ragpacer cache hit / bare at p50: {out['ratio_c1_to_bare_p50']:.2f}x (median of "
          f"{len(spread)} rounds, {spread[0]:.2f}-{spread[-1]:.2f})")
    for c in ("c1", "c32"):
        o = out[c]
        print(f"{c}: latency p50 {o['latency_ms']['p50']:.2f} p99 {o['latency_ms']['p99']:.2f} ms;"
              f" HTTP overhead p50 {o['http_overhead_ms']['p50']:.2f} p99 "
              f"{o['http_overhead_ms']['p99']:.2f} ms; {o['requests_per_s']:.0f} req/s")
    t = out["tracing"]
    print(f"tracing: p50 none {t['none']['p50']:.3f} ms, otlp {t['otlp']['p50']:.3f} ms, "
          f"cost {t['cost_ms_p50']:.3f} ms")
    i = out["in_process"]
    print(f"in-process hit, µs p50: warm caches {i['ragpacer_warm_us_p50']:.0f} (bare "
          f"{i['bare_warm_us_p50']:.0f}), cold caches {i['ragpacer_cold_us_p50']:.0f} (bare "
          f"{i['bare_cold_us_p50']:.0f})")
    print("saved", save("bench_http", out))


if __name__ == "__main__":
    main()

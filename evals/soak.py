"""Soak: the served endpoint at a steady rate with the mixed workload for a long time.

    .venv/bin/python -m evals.soak                       # 30 minutes at the sustainable rate
    .venv/bin/python -m evals.soak --minutes 3 --rate 4  # what CI runs (tests/test_soak.py)

`ragpacer serve` runs in its own process and starts its own vLLM engine; every few seconds
its resident memory, open file descriptors and threads are sampled. Pass/fail bounds
(stated here, checked by `verdict`): after the first tenth of the run (warm-up: pools, JIT
caches, the semantic index filling), resident memory grows by at most GROWTH_MB and open
descriptors by at most FD_GROWTH; every request returns (none stuck past its deadline +
STUCK_S); after shutdown no process of the server or its engine is left.
Writes evals/results/soak.json (with the samples for plotting).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from evals.common import save
from evals.server_process import llm_answers, sampled, served
from ragpacer.pipeline.bench.loadgen import HttpTarget, run_load

GROWTH_MB = 64.0
FD_GROWTH = 32
STUCK_S = 5.0
DEADLINE_MS = 2500


async def soak(url_env: dict[str, str], minutes: float, rate: float | None,
               sample_every_s: float = 5.0) -> dict[str, Any]:
    with served({**llm_answers(), **url_env}) as server:
        if rate is None:  # the sustainable rate: closed-loop throughput with 8 callers
            probe = HttpTarget(server.url, None, None)
            rate = round((await run_load(probe, requests=200, concurrency=8,
                                         warmup=8))["throughput_rps"], 2)
            await probe.client.aclose()
        requests = int(rate * minutes * 60)
        target = HttpTarget(server.url, None, None)
        target.client.timeout = DEADLINE_MS / 1000 + STUCK_S  # a stuck request fails loudly
        result = await sampled(server, run_load(target, requests=requests, rate=rate,
                                                warmup=10, deadline_ms=DEADLINE_MS),
                               every_s=sample_every_s)
        await target.client.aclose()
    result["shutdown"] = "clean: no process of the server or its engine left"
    result["minutes"] = minutes
    return result


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    samples = result["samples"]
    cut = max(1, len(samples) // 10)
    settled, tail = samples[cut:cut * 2] or samples[:1], samples[-cut:]
    growth = (statistics.median(s["rss_mb"] for s in tail)
              - statistics.median(s["rss_mb"] for s in settled))
    fd_growth = max(s["fds"] for s in samples[cut:]) - min(s["fds"] for s in samples[cut:])
    stuck = result["requests"] - result["answered"] - sum(
        v for k, v in result["errors"].items() if k.startswith("RuntimeError: HTTP "))
    return {"rss_growth_mb": round(growth, 1), "rss_bound_mb": GROWTH_MB,
            "fd_growth": fd_growth, "fd_bound": FD_GROWTH, "stuck_or_failed": stuck,
            "ok": growth <= GROWTH_MB and fd_growth <= FD_GROWTH and stuck == 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=None, help="req/s (default: measured)")
    args = ap.parse_args()
    result = asyncio.run(soak({"RAGPACER_TRACING__EXPORTER": "jsonl"}, args.minutes, args.rate))
    result["verdict"] = verdict(result)
    e = result["e2e_ms"]
    print(f"{args.minutes} min at {result['rate']} req/s: {result['answered']} answered, "
          f"p50 {e['p50']:.0f} p99 {e['p99']:.0f} ms, late {result['late_rate']:.2%}, "
          f"errors {result['errors']}; {result['verdict']}")
    print(f"wrote {save('soak', result)}")


if __name__ == "__main__":
    main()

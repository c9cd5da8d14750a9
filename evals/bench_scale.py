"""Capacity: the sustainable request rate of `ragpacer serve` with 1 and 2 worker processes
and 1 and 2 managed engine replicas, in one run.

    .venv/bin/python -m evals.bench_scale [--deadline-ms 2500]

Two workloads over HTTP, the default query mix, cache off, Redis shared: the shipped answers
(extractive, no LLM: the workers' CPU is the limit) with 1 and 2 workers; and every route
with a model answering through the LLM (``llm_grounded``) with 1 and 2 workers x 1 and 2
replicas. Each configuration is its own `ragpacer serve` process, searched as `ragpacer bench
--find-rate` does: the highest Poisson rate at which 99% of answers arrive within the
deadline + 50 ms, none fails and few have a stage that fell back for time (5%; through the
LLM 25%, above the 10-17% that fall back idle: else an LLM workload would hold on extractive
fallbacks). The load generator runs on the same machine.
Writes evals/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from evals.common import save
from evals.server_process import llm_answers, served
from ragpacer.pipeline.bench.loadgen import HttpTarget, sustainable_rate

PORT = 8190
# The share of answers allowed a stage that fell back. Idle, 10-17% of the LLM path's answers
# already do (the model ends no sentence within its budget, or an engine call fails): the
# threshold sits above that, so it measures what load adds.
MAX_FALLBACK = {"shipped": 0.05, "llm_grounded": 0.25}
CONFIGS = [("shipped", 1, 1), ("shipped", 2, 1),
           ("llm_grounded", 1, 1), ("llm_grounded", 2, 1),
           ("llm_grounded", 1, 2), ("llm_grounded", 2, 2)]


def environment(workload: str, workers: int, replicas: int) -> dict[str, str]:
    urls = [f"http://127.0.0.1:{PORT + i}/v1" for i in range(replicas)]
    env = {"RAGPACER_SERVER__WORKERS": str(workers), "RAGPACER_CACHE__ENABLED": "false",
           "RAGPACER_TRACING__EXPORTER": "none", "RAGPACER_REDIS_URL": "redis://127.0.0.1:6379/8",
           "RAGPACER_LLM__MANAGED__PORT": str(PORT),
           "RAGPACER_LLM__MANAGED__REPLICAS": str(replicas),
           "RAGPACER_LLM__MODELS": json.dumps([{
               "name": "smollm2", "url": urls[0], "urls": urls if replicas > 1 else []}])}
    if workload != "shipped":
        env.update(llm_answers(workload))
    return env


async def measure(url: str, deadline_ms: float, max_fallback: float) -> dict[str, Any]:
    target = HttpTarget(url, None, deadline_ms)
    try:
        # A rate holds only while few answers have a stage that fell back (through the LLM,
        # the client skips a saturated engine and answers extractively, always in time).
        return await sustainable_rate(target, deadline_ms, refine=2, seconds_per_step=6,
                                      say=print, max_degraded=max_fallback)
    finally:
        await target.client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deadline-ms", type=float, default=2500.0)
    ap.add_argument("--workload", choices=["all", "shipped", "llm_grounded"], default="all")
    args = ap.parse_args()
    runs = []
    for workload, workers, replicas in CONFIGS:
        if args.workload not in ("all", workload):
            continue
        print(f"{workload}: {workers} worker(s), {replicas} replica(s)", flush=True)
        with served(environment(workload, workers, replicas), timeout_s=400) as server:
            found = asyncio.run(measure(server.url, args.deadline_ms, MAX_FALLBACK[workload]))
        runs.append({"workload": workload, "workers": workers, "replicas": replicas, **found})
        print(f"  sustainable: {found['sustainable_rps']}/s", flush=True)
    print("| answers | workers | engine replicas | sustainable rate, req/s |")
    print("|---|---|---|---|")
    for r in runs:
        replicas = r["replicas"] if r["workload"] != "shipped" else "-"
        print(f"| {r['workload']} | {r['workers']} | {replicas} | {r['sustainable_rps']} |")
    print(f"wrote {save('bench_scale', {'deadline_ms': args.deadline_ms, 'runs': runs})}")


if __name__ == "__main__":
    main()

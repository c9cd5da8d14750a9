"""Overload: the served endpoint at 1x, 2x and 4x its sustainable rate, budgets on and off.

    .venv/bin/python -m evals.bench_overload                 # full size (~6 min)
    .venv/bin/python -m evals.bench_overload --seconds 10    # quick look

One real vLLM engine (adopted by every server started here), `ragpacer serve` in its own
process, open-loop Poisson arrivals over HTTP. The response cache is off so that every
RAG request reaches the LLM: the worst case. The sustainable rate is the closed-loop
throughput at the admission limit's worth of callers, measured first in the same run.
Budgets off means: a 30 s deadline and stage budgets, and admission control wide open.
Writes evals/results/overload.json; `evals.plots` draws it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from evals.common import save
from evals.server_process import ROOT, ServerProcess, llm_answers, sampled, served
from ragpacer.pipeline.bench.loadgen import HttpTarget, run_load
from ragpacer.pipeline.core.settings import load_settings

DEADLINE_MS = 2500
ON = {**llm_answers(), "RAGPACER_CACHE__ENABLED": "false", "RAGPACER_TRACING__EXPORTER": "none",
      "RAGPACER_DEADLINE_MS": str(DEADLINE_MS), "RAGPACER_SERVER__MAX_CONCURRENCY": "16",
      "RAGPACER_SERVER__MAX_QUEUE": "32"}
OFF = {**ON, "RAGPACER_DEADLINE_MS": "30000", "RAGPACER_SERVER__MAX_CONCURRENCY": "100000",
       "RAGPACER_SERVER__MAX_QUEUE": "100000",
       **{f"RAGPACER_STAGES__{s.upper()}__BUDGET_MS": "30000"
          for s in ("cache", "input_guardrails", "intent", "retrieval", "features", "tools",
                    "generation", "output_guardrails")}}


@contextlib.contextmanager
def shared_engine() -> Iterator[None]:
    """Start the configured engine once; each server below adopts it and leaves it running."""
    from ragpacer.pipeline.llm.manager import managed_engine

    engine = managed_engine(load_settings(ROOT / "ragpacer.yaml"), print)
    engine.start()
    engine.wait_healthy(None, print)
    try:
        yield
    finally:
        engine.stop()


async def phase(server: ServerProcess, *, rate: float | None, seconds: float,
                concurrency: int | None = None, deadline_ms: float = DEADLINE_MS) -> dict:
    target = HttpTarget(server.url, None, None)
    requests = int(rate * seconds) if rate else int(seconds * 4)
    out = await sampled(server, run_load(target, requests=requests, rate=rate,
                                         concurrency=concurrency, warmup=4,
                                         deadline_ms=deadline_ms))
    await target.client.aclose()
    rejected = sum(v for k, v in out["errors"].items()
                   if k in ("RuntimeError: HTTP 503", "RuntimeError: HTTP 429"))
    out["rejected_rate"] = rejected / max(requests, 1)
    out["accepted_rps"] = out["answered"] / (requests / rate) if rate else out["throughput_rps"]
    return out


def row(name: str, r: dict) -> str:
    e = r["e2e_ms"]
    return (f"{name:14} offered {r['rate'] or 0:6.1f}/s  accepted {r['accepted_rps']:6.2f}/s  "
            f"p50 {e.get('p50', 0):7.0f}  p99 {e.get('p99', 0):7.0f} ms  "
            f"late {r['late_rate'] or 0:5.1%}  rejected {r['rejected_rate']:5.1%}  "
            f"degraded {r['degraded_rate']:5.1%}  rss {r['server_rss_mb']['start']:.0f}->"
            f"{r['server_rss_mb']['end']:.0f} MB  fds {r['server_fds']['start']}->"
            f"{r['server_fds']['end']}")


async def main_async(seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"deadline_ms": DEADLINE_MS, "seconds": seconds}
    with served(ON) as server:
        sustain = await phase(server, rate=None, concurrency=8, seconds=seconds)
        rate = round(sustain["throughput_rps"], 2)
        results["sustainable"] = {"rps": rate, "closed_loop": sustain}
        print(f"sustainable rate (closed loop, 8 callers): {rate} req/s")
        for mult in (1, 2, 4):
            r = await phase(server, rate=rate * mult, seconds=seconds)
            results[f"budgets_on_{mult}x"] = r
            print(row(f"budgets on {mult}x", r))
    with served(OFF) as server:
        r = await phase(server, rate=rate * 2, seconds=seconds, deadline_ms=DEADLINE_MS)
        results["budgets_off_2x"] = r
        print(row("budgets off 2x", r))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    with shared_engine():
        results = asyncio.run(main_async(args.seconds))
    print(f"wrote {save('overload', results)}")


if __name__ == "__main__":
    main()

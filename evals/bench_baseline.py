"""ragpacer against the same product with every optimisation off, same requests, same run.

    .venv/bin/python -m evals.bench_baseline                  # full size (~15 min)
    .venv/bin/python -m evals.bench_baseline --requests 40    # quick look

Three configurations through one real vLLM engine, each fed the same seeded request
sequence from the demo query mix in a closed loop: the baseline (evals/baseline.py), ragpacer
with its response cache off, and ragpacer as shipped. Reports end-to-end and per-stage
p50/p95/p99 and the baseline / ragpacer ratio at each percentile.
Writes evals/results/baseline.json; `evals.plots` draws the waterfall and the CDFs.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from evals.baseline import BaselinePipeline, BaselineTarget
from evals.common import save
from evals.server_process import ROOT
from ragpacer.pipeline.bench.loadgen import SdkTarget, run_load
from ragpacer.pipeline.bench.quality import variant_overrides
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.sdk import Pipeline

STAGES = ["cache", "input_guardrails", "intent", "features", "retrieval", "tools",
          "generation", "grounding", "output_guardrails"]


def ratios(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    return {q: round(base[q] / ours[q], 2) for q in ("p50", "p95", "p99")
            if base.get(q) and ours.get(q)}


def table(results: dict[str, Any]) -> str:
    names = list(results["runs"])
    lines = [f"{'':18}" + "".join(f"{n:>30}" for n in names)
             + f"{'ratio base/shipped':>22}"]

    def cells(get: Any) -> str:
        return "".join(f"{_ms(get(results['runs'][n])):>30}" for n in names)

    e2e = {n: results["runs"][n]["e2e_ms"] for n in names}
    lines.append(f"{'end-to-end':18}" + cells(lambda r: r["e2e_ms"])
                 + f"{_ratio(ratios(e2e['baseline'], e2e['ragpacer']))!s:>22}")
    for st in STAGES:
        lines.append(f"{st:18}" + cells(lambda r, st=st: r["stages_ms"].get(st, {})))
    return "\n".join(lines)


def _ms(p: dict[str, Any]) -> str:
    return f"{p['p50']:.1f} / {p['p95']:.1f} / {p['p99']:.1f}" if p.get("n") else "-"


def _ratio(r: dict[str, float]) -> str:
    return " / ".join(f"{v:g}x" for v in r.values())


async def main_async(requests: int, concurrency: int) -> dict[str, Any]:
    settings = load_settings(ROOT / "ragpacer.yaml")
    # Every route with a model through the LLM: the baseline always asks it, and so does this
    # run of ragpacer (the shipped extractive answers never wait for the model).
    llm = load_settings(ROOT / "ragpacer.yaml", overrides=variant_overrides(
        "llm_grounded", settings.routing.routes))
    shipped = Pipeline(llm)
    await shipped.astart(print)  # starts (or adopts) the managed engine
    no_cache = Pipeline(llm.model_copy(update={"cache": llm.cache.model_copy(
        update={"enabled": False})}), llm=shipped.llm, resources=shipped.resources)
    await no_cache.astart()
    base = BaselinePipeline(llm, resources=shipped.resources)
    await base.astart()
    targets = {"baseline": BaselineTarget(base),
               "ragpacer_cache_off": SdkTarget(no_cache, None),
               "ragpacer": SdkTarget(shipped, None)}
    runs = {}
    for name, target in targets.items():
        print(f"{name}: {requests} requests, {concurrency} callers", flush=True)
        runs[name] = await run_load(target, requests=requests, concurrency=concurrency,
                                    warmup=10, seed=1)
    for p in (no_cache, shipped):
        await p.aclose()
    await base.llm.aclose()
    out: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "runs": runs}
    out["ratio_e2e"] = {n: ratios(runs["baseline"]["e2e_ms"], runs[n]["e2e_ms"])
                        for n in ("ragpacer_cache_off", "ragpacer")}
    out["ratio_stages"] = {st: ratios(runs["baseline"]["stages_ms"][st],
                                      runs["ragpacer_cache_off"]["stages_ms"][st])
                           for st in STAGES if st in runs["baseline"]["stages_ms"]
                           and st in runs["ragpacer_cache_off"]["stages_ms"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    results = asyncio.run(main_async(args.requests, args.concurrency))
    print(table(results))
    print("e2e ratio baseline / config at p50/p95/p99:", results["ratio_e2e"])
    print("per-stage ratio baseline / ragpacer (cache off):", results["ratio_stages"])
    print(f"wrote {save('baseline', results)}")


if __name__ == "__main__":
    main()

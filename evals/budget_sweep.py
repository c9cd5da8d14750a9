"""Answer quality against the deadline: answerable cases of the answer-quality eval under
deadlines from tight to loose, with the response cache off.

    .venv/bin/python -m evals.budget_sweep          # full size: 40 cases x 7 deadlines
    (evals/budget_sweep.ipynb runs it small in CI and plots it)

Per deadline and answer path (``llm``: the model unchecked; ``llm_grounded``: as shipped, the
grounding stage replacing unsupported answers) it reports fact accuracy, the share of answers
with an unsupported claim, how many answers the LLM made, answers cut mid-sentence, the gold
article among the first three sources and the median latency. Writes
evals/results/budget_sweep.json.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from evals.common import save
from ragpacer.pipeline.bench import quality
from ragpacer.pipeline.core.settings import Settings, load_settings
from ragpacer.pipeline.sdk import Pipeline

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "evals" / "data" / "answer_quality.jsonl"
KINDS = ("fact", "paraphrase", "multi")
DEADLINES_MS = [300, 600, 1000, 1500, 2500, 4000, 8000]
PATHS = ("llm", "llm_grounded")


def eval_settings(max_tokens: int | None = None, generation_budget_ms: float | None = None,
                  answer: str = "llm_grounded") -> Settings:
    """ragpacer.yaml without the process environment, every route with a model answering
    ``answer``'s way (the latency notebooks measure the LLM path); with EVAL_LLM_URL, that
    running engine (CI points the notebooks at one) instead of starting the managed one."""
    overrides: dict[str, Any] = {"cache": {"enabled": False}, "tracing": {"exporter": "none"}}
    url = os.environ.get("EVAL_LLM_URL")
    # Greedy decoding: answers then differ only where the deadline cuts them, not by sampling.
    model: dict[str, Any] = {"name": "smollm2", "url": url or "http://127.0.0.1:8000/v1",
                             "temperature": 0.0}
    if max_tokens:
        model["max_tokens"] = max_tokens
    overrides["llm"] = {"models": [model], **({"engine": "external"} if url else {})}
    if generation_budget_ms:  # the sweep: the deadline, not the stage budget, is the limit
        overrides["stages"] = {"generation": {"budget_ms": generation_budget_ms}}
    if answer != "shipped":  # every route with a model answers this way
        overrides.update(quality.variant_overrides(
            answer, load_settings(ROOT / "ragpacer.yaml", environ={}).routing.routes))
    settings = load_settings(ROOT / "ragpacer.yaml", environ={}, overrides=overrides)
    if generation_budget_ms:  # a route's own generation budget (lending: 2,300) too
        for route in settings.routing.routes.values():
            if "generation" in route.budgets:
                route.budgets["generation"] = generation_budget_ms
    return settings


def sweep_cases(n: int) -> list[quality.Case]:
    """``n`` answerable cases spread evenly over the eval's fact, paraphrase and multi kinds."""
    pool = [c for c in quality.load_cases(CASES) if c.kind in KINDS]
    step = max(1, len(pool) // n)
    return pool[::step][:n]


async def sweep(pipeline: Pipeline, cases: list[quality.Case], deadlines: list[float],
                progress: Any = print) -> list[dict[str, Any]]:
    out = []
    for d in deadlines:
        rows = await quality.run_cases(quality.sdk_target(pipeline, d), cases)
        summary = quality.summarise(rows)
        summary.update(deadline_ms=d,
                       llm_share=sum(r["answer_kind"] == "llm" for r in rows) / len(rows))
        out.append(summary)
        progress(f"{d:g} ms: fact accuracy {summary['fact_accuracy']:.0%}")
    return out


async def run(quick: bool) -> dict[str, Any]:
    cases = sweep_cases(6 if quick else 40)
    deadlines = [300, 1000, 2500] if quick else DEADLINES_MS
    result: dict[str, Any] = {"quick": quick, "cases": [c.id for c in cases], "paths": {}}
    for path in PATHS:
        pipeline = Pipeline(eval_settings(max_tokens=48 if quick else None,
                                          generation_budget_ms=max(deadlines), answer=path))
        await pipeline.astart(print)
        try:
            result["paths"][path] = await sweep(pipeline, cases, deadlines)
        finally:
            await pipeline.aclose()
    return result


def main() -> None:
    result = asyncio.run(run(quick=False))
    for path, rows in result["paths"].items():
        for r in rows:
            print(f"{path:>12} {r['deadline_ms']:>6g} ms: facts {r['fact_accuracy']:.0%}, "
                  f"unsupported {r['unsupported_rate']:.0%}, LLM {r['llm_share']:.0%}, "
                  f"mid-sentence {r['mid_sentence_rate']:.0%}, gold@3 {r['gold_at_3']:.0%}, "
                  f"p50 {r['p50_ms']:.0f} ms")
    print(f"wrote {save('budget_sweep', result)}")


if __name__ == "__main__":
    main()

"""Prompt economy: what the LLM path's prompt costs, whole articles against the sentences that
answer, at 1 and 16 requests in flight, in one run on one engine.

    .venv/bin/python -m evals.bench_prompt [--cases 30] [--concurrency 1 16]

Cases: the answer-quality eval's fact questions (the demo mix). Every route with a model
answers through the LLM (the ``llm`` path), cache off, the default deadline. Per mode and
concurrency: prompt tokens, TTFT and completion tokens as the engine reports them (kept also
when the answer fell back to the extractive one), the share of answers the LLM finished, fact
accuracy and end-to-end latency. The two modes alternate (A B B A) so drift hits both.
Writes evals/results/bench_prompt.json.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from evals.answer_quality import eval_slice, settings_for
from evals.common import percentiles, save
from ragpacer.pipeline.bench import quality
from ragpacer.pipeline.sdk import Pipeline

MODES = ("articles", "sentences")


def _settings(mode: str, external: bool) -> Any:
    base = settings_for({"cache": {"enabled": False}})
    over: dict[str, Any] = {"cache": {"enabled": False}, "llm": {"source_text": mode},
                            **quality.variant_overrides("llm", base.routing.routes)}
    if external:  # the engine the first pipeline started
        over["llm"]["engine"] = "external"
    return settings_for(over)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r["llm_call"] for r in rows if r.get("llm_call")]
    answered = [r for r in rows if r["expect"] == "answer"]
    return {
        "requests": len(rows), "engine_calls": len(calls),
        "prompt_tokens": percentiles([c["prompt_tokens"] for c in calls]),
        "ttft_ms": percentiles([c["ttft_ms"] for c in calls if c["ttft_ms"] is not None]),
        "completion_tokens": percentiles([c["completion_tokens"] for c in calls]),
        "llm_answer_rate": round(sum(r["answer_kind"] == "llm" for r in rows) / len(rows), 4),
        "fact_accuracy": round(sum(r["correct"] for r in answered) / len(answered), 4),
        "e2e_ms": percentiles([r["elapsed_ms"] for r in rows]),
    }


async def main_async(n_cases: int, levels: list[int]) -> dict[str, Any]:
    cases = [c for c in eval_slice(None) if c.kind == "fact"][:n_cases]
    owner = Pipeline(_settings("sentences", external=False))
    await owner.astart(print)
    pipes = {m: Pipeline(_settings(m, external=True), resources=owner.resources,
                         llm=owner.llm) for m in MODES}
    await quality.run_cases(quality.sdk_target(pipes["articles"], None), cases[:4],
                            concurrency=4)  # warm the engine and the client's estimates
    out: dict[str, Any] = {"cases": len(cases), "by_concurrency": {}}
    try:
        for level in levels:
            rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for mode in (*MODES, *reversed(MODES)):
                print(f"c={level} {mode}", flush=True)
                rows[mode] += await quality.run_cases(
                    quality.sdk_target(pipes[mode], None), cases, concurrency=level)
            out["by_concurrency"][str(level)] = {m: summary(rows[m]) for m in MODES}
    finally:
        for p in pipes.values():
            await p.aclose()
        await owner.aclose()
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| in flight | sources | prompt tokens p50 | TTFT p50 / p95 ms | completion "
             "tokens p50 | LLM finished | facts | e2e p50 ms |", "|---" * 8 + "|"]
    for level, modes in result["by_concurrency"].items():
        for mode, s in modes.items():
            lines.append(
                f"| {level} | {mode} | {s['prompt_tokens']['p50']:.0f} | "
                f"{s['ttft_ms']['p50']:.0f} / {s['ttft_ms']['p95']:.0f} | "
                f"{s['completion_tokens']['p50']:.0f} | {s['llm_answer_rate']:.0%} | "
                f"{s['fact_accuracy']:.0%} | {s['e2e_ms']['p50']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    result = asyncio.run(main_async(args.cases, args.concurrency))
    print(table(result))
    print(f"wrote {save('bench_prompt', result)}")


if __name__ == "__main__":
    main()

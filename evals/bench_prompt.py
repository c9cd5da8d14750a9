"""Prompt economy: what the LLM path's prompt costs, whole articles against the sentences that
answer, at 1 and 16 requests in flight, in one run on one engine.

    .venv/bin/python -m evals.bench_prompt [--cases 30] [--concurrency 1 16]

Cases: the answer-quality eval's fact questions (the demo mix). Every route with a model
answers through the LLM (the ``llm`` path), cache off, the default deadline. Per mode and
concurrency: the share of requests that called the engine (a call beyond the model's
``max_in_flight`` is answered from the sources at once), prompt tokens, TTFT and completion
tokens as the engine reports them (kept also when the answer fell back to the extractive
one), the share of answers the LLM finished, fact accuracy, end-to-end latency, and the
prompt tokens the engine's prefix cache supplied. The
two modes alternate (A B B A) so drift hits both; the prefix cache is emptied before each
pass (vLLM's development endpoint, enabled for this run only), so a pass never reuses an
earlier pass's prompts, only what requests of the same pass share: the system prompt.
Writes evals/results/bench_prompt.json.

    .venv/bin/python -m evals.bench_prompt --capacity [--cases 30]

How many completion tokens the default budget lets the model write, one request at a time:
the model is told to ignore its end-of-sequence token (`extra_body: {ignore_eos: true}`), so
each answer runs until the budget's token limit or the deadline stops it. Whole articles with
nothing of the prompt reused (the prefix cache emptied before every request) against the
sentences that answer with the system prompt in the prefix cache, alternating A B B A.
Writes evals/results/bench_prompt_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from typing import Any

import httpx

from evals.answer_quality import eval_slice, settings_for
from evals.common import percentiles, save
from ragpacer.pipeline.bench import quality
from ragpacer.pipeline.sdk import Pipeline

MODES = ("articles", "sentences")


def _settings(mode: str, external: bool, run_on: bool = False) -> Any:
    """``run_on``: the model ignores its end-of-sequence token (the capacity pass)."""
    base = settings_for({"cache": {"enabled": False}})
    over: dict[str, Any] = {"cache": {"enabled": False}, "llm": {"source_text": mode},
                            **quality.variant_overrides("llm", base.routing.routes)}
    if external:  # the engine the first pipeline started
        over["llm"]["engine"] = "external"
    if run_on:
        over["llm"]["models"] = [m.model_dump() | {"extra_body": {"ignore_eos": True}}
                                 for m in base.llm.models]
    return settings_for(over)


def engine_counters(base_url: str) -> tuple[float, float]:
    """Prompt tokens served from the prefix cache, and all prompt tokens, so far."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text

    def counter(name: str) -> float:
        m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    return counter("vllm:prefix_cache_hits_total"), counter("vllm:prompt_tokens_total")


def reset_prefix_cache(base_url: str) -> None:
    httpx.post(f"{base_url}/reset_prefix_cache", timeout=10).raise_for_status()


def summary(rows: list[dict[str, Any]], cached_tokens: float,
            prompt_total: float) -> dict[str, Any]:
    calls = [r["llm_call"] for r in rows if r.get("llm_call")]
    # The engine reports usage at the end of a stream: a call cut at the deadline has none.
    counted = [c["prompt_tokens"] for c in calls if c["prompt_tokens"]]
    answered = [r for r in rows if r["expect"] == "answer"]
    return {
        "requests": len(rows), "engine_calls": len(calls), "calls_with_usage": len(counted),
        "prompt_tokens": percentiles(counted),
        "ttft_ms": percentiles([c["ttft_ms"] for c in calls if c["ttft_ms"] is not None]),
        "completion_tokens": percentiles([c["completion_tokens"] for c in calls]),
        "llm_answer_rate": round(sum(r["answer_kind"] == "llm" for r in rows) / len(rows), 4),
        "fact_accuracy": round(sum(r["correct"] for r in answered) / len(answered), 4),
        "e2e_ms": percentiles([r["elapsed_ms"] for r in rows]),
        # Of every prompt token the engine read in the pass (the metric counts cut calls too).
        "prefix_cached_share": round(cached_tokens / max(prompt_total, 1), 4),
    }


async def _pipelines(run_on: bool = False) -> tuple[Pipeline, dict[str, Pipeline]]:
    """The pipeline that starts the engine, and one per mode on that engine."""
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache, for this run's engine
    owner = Pipeline(_settings("sentences", external=False, run_on=run_on))
    await owner.astart(print)
    return owner, {m: Pipeline(_settings(m, external=True, run_on=run_on),
                               resources=owner.resources, llm=owner.llm) for m in MODES}


async def _close(owner: Pipeline, pipes: dict[str, Pipeline]) -> None:
    for p in pipes.values():
        await p.aclose()
    await owner.aclose()


async def main_async(n_cases: int, levels: list[int]) -> dict[str, Any]:
    cases = [c for c in eval_slice(None) if c.kind == "fact"][:n_cases]
    owner, pipes = await _pipelines()
    base = owner.engine.base_url
    await quality.run_cases(quality.sdk_target(pipes["articles"], None), cases[:4],
                            concurrency=4)  # warm the engine and the client's estimates
    out: dict[str, Any] = {"cases": len(cases), "by_concurrency": {}}
    try:
        for level in levels:
            rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            cached = dict.fromkeys(MODES, 0.0)
            read = dict.fromkeys(MODES, 0.0)
            for mode in (*MODES, *reversed(MODES)):
                print(f"c={level} {mode}", flush=True)
                await asyncio.to_thread(reset_prefix_cache, base)
                hits0, read0 = await asyncio.to_thread(engine_counters, base)
                rows[mode] += await quality.run_cases(
                    quality.sdk_target(pipes[mode], None), cases, concurrency=level)
                hits1, read1 = await asyncio.to_thread(engine_counters, base)
                cached[mode] += hits1 - hits0
                read[mode] += read1 - read0
            out["by_concurrency"][str(level)] = {m: summary(rows[m], cached[m], read[m])
                                                 for m in MODES}
    finally:
        await _close(owner, pipes)
    return out


async def capacity_async(n_cases: int) -> dict[str, Any]:
    """Completion tokens within the default budget, per mode, one request at a time."""
    cases = [c for c in eval_slice(None) if c.kind == "fact"][:n_cases]
    owner, pipes = await _pipelines(run_on=True)
    base = owner.engine.base_url
    await quality.run_cases(quality.sdk_target(pipes["articles"], None), cases[:4])  # warm
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        for mode in (*MODES, *reversed(MODES)):
            print(f"capacity {mode}", flush=True)
            await asyncio.to_thread(reset_prefix_cache, base)
            for case in cases:
                if mode == "articles":  # nothing of the prompt reused
                    await asyncio.to_thread(reset_prefix_cache, base)
                rows[mode] += await quality.run_cases(
                    quality.sdk_target(pipes[mode], None), [case])
    finally:
        await _close(owner, pipes)
    out: dict[str, Any] = {"cases": len(cases), "deadline_ms": owner.settings.deadline_ms}
    for mode, got in rows.items():
        calls = [r["llm_call"] for r in got if r.get("llm_call")]
        out[mode] = {
            "requests": len(got), "engine_calls": len(calls),
            "completion_tokens": percentiles([c["completion_tokens"] for c in calls]),
            "ttft_ms": percentiles([c["ttft_ms"] for c in calls if c["ttft_ms"] is not None]),
            "prompt_tokens": percentiles([c["prompt_tokens"] for c in calls
                                          if c["prompt_tokens"]]),
            "cut_at_deadline": round(sum(bool(c["truncated"]) for c in calls)
                                     / max(len(calls), 1), 4),
            # How much of the deadline the request used: what the token limit left unused.
            "e2e_ms": percentiles([r["elapsed_ms"] for r in got if r.get("llm_call")])}
    return out


def capacity_table(result: dict[str, Any]) -> str:
    lines = ["| prompt | completion tokens p50 / p95 | TTFT p50 / p95 ms | prompt tokens p50 "
             "| cut at the deadline | e2e p50 ms |", "|---" * 6 + "|"]
    for mode in MODES:
        s = result[mode]
        lines.append(
            f"| {mode} | {_ms(s['completion_tokens'], 'p50')} / "
            f"{_ms(s['completion_tokens'], 'p95')} | {_ms(s['ttft_ms'], 'p50')} / "
            f"{_ms(s['ttft_ms'], 'p95')} | {_ms(s['prompt_tokens'], 'p50')} | "
            f"{s['cut_at_deadline']:.0%} | {_ms(s['e2e_ms'], 'p50')} |")
    return "\n".join(lines)


def _ms(figures: dict[str, float], key: str) -> str:
    return f"{figures[key]:.0f}" if key in figures else "-"  # no sample: none measured


def table(result: dict[str, Any]) -> str:
    lines = ["| in flight | sources | LLM called | prompt tokens p50 | from prefix cache | "
             "TTFT p50 / p95 ms | completion tokens p50 | LLM finished | facts | e2e p50 ms |",
             "|---" * 10 + "|"]
    for level, modes in result["by_concurrency"].items():
        for mode, s in modes.items():
            lines.append(
                f"| {level} | {mode} | {s['engine_calls'] / s['requests']:.0%} | "
                f"{_ms(s['prompt_tokens'], 'p50')} | "
                f"{s['prefix_cached_share']:.0%} | "
                f"{_ms(s['ttft_ms'], 'p50')} / {_ms(s['ttft_ms'], 'p95')} | "
                f"{_ms(s['completion_tokens'], 'p50')} | {s['llm_answer_rate']:.0%} | "
                f"{s['fact_accuracy']:.0%} | {_ms(s['e2e_ms'], 'p50')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--capacity", action="store_true",
                    help="completion tokens the default budget allows (answers forced long)")
    args = ap.parse_args()
    if args.capacity:
        capacity = asyncio.run(capacity_async(args.cases))
        print(f"wrote {save('bench_prompt_capacity', capacity)}")
        print(capacity_table(capacity))
        return
    result = asyncio.run(main_async(args.cases, args.concurrency))
    print(f"wrote {save('bench_prompt', result)}")
    print(table(result))


if __name__ == "__main__":
    main()

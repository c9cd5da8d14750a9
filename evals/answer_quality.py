"""The answer-quality eval, every answer path side by side in one run, cache off.

    .venv/bin/python -m evals.answer_quality     # full size: all cases, 4 paths, +no history
    (evals/answer_quality.ipynb runs a slice of every kind in CI and plots it;
    `ragpacer eval answers` is the same harness from the command line)

Paths: ``shipped`` (ragpacer.yaml as it is), ``llm`` (the model unchecked: the
unsupported-claim rate before the grounding stage), ``llm_grounded`` and ``extractive``. The
two-turn cases run twice more: without their history, to show what history handling adds,
and rewritten by the LLM (``llm.rewrite_model``) instead of carried.
Writes evals/results/answer_quality.json.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from evals.common import save
from ragpacer.pipeline.bench import quality
from ragpacer.pipeline.core.settings import Settings, deep_merge, load_settings

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "evals" / "data" / "answer_quality.jsonl"
PATHS = ("shipped", "llm", "llm_grounded", "extractive")


def settings_for(overrides: dict[str, Any]) -> Settings:
    """ragpacer.yaml without the process environment; with EVAL_LLM_URL, that running engine
    (CI points the notebooks at one) instead of starting the managed one."""
    base: dict[str, Any] = {"tracing": {"exporter": "none"}}
    url = os.environ.get("EVAL_LLM_URL")
    if url:
        base["llm"] = {"engine": "external",
                       "models": [{"name": "smollm2", "url": url, "temperature": 0.0}]}
    return load_settings(ROOT / "ragpacer.yaml", environ={},
                         overrides=deep_merge(base, overrides))


def eval_slice(per_kind: int | None) -> list[quality.Case]:
    """Every case, or the first ``per_kind`` of each kind."""
    cases = quality.load_cases(CASES)
    if per_kind is None:
        return cases
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        seen[c.kind] = seen.get(c.kind, 0) + 1
        if seen[c.kind] <= per_kind:
            out.append(c)
    return out


async def run(per_kind: int | None = None, deadline_ms: float | None = None,
              concurrency: int = 3) -> dict[str, Any]:
    cases = eval_slice(per_kind)
    result = await quality.compare(settings_for, PATHS, cases, deadline_ms=deadline_ms,
                                   concurrency=concurrency)
    follow_ups = [c for c in cases if c.kind == "followup"]
    alone = await quality.compare(settings_for, ["shipped"], follow_ups,
                                  deadline_ms=deadline_ms, concurrency=concurrency,
                                  history=False)
    rewritten = await quality.compare(with_rewrite, ["shipped"], follow_ups,
                                      deadline_ms=deadline_ms, concurrency=concurrency)
    return {"cases": len(cases), "deadline_ms": deadline_ms,
            "paths": {k: v["report"] for k, v in result.items()},
            "rows": {k: v["rows"] for k, v in result.items()},
            "followups_without_history": alone["shipped"]["report"]["overall"],
            "followups_llm_rewrite": rewritten["shipped"]["report"]["overall"]}


def with_rewrite(overrides: dict[str, Any]) -> Settings:
    """The shipped config with follow-ups rewritten by the LLM (``llm.rewrite_model``)."""
    return settings_for(deep_merge(overrides, {"llm": {"rewrite_model": "smollm2"}}))


def main() -> None:
    result = asyncio.run(run())
    keys = ("gold_at_3", "fact_accuracy", "unsupported_rate", "decline_rate_out_of_scope",
            "decline_rate_unanswerable", "false_decline_rate", "wrong_answer_rate",
            "unanswered_said_rate", "answerable_said_unanswered_rate", "mid_sentence_rate")
    for path, rep in result["paths"].items():
        o = rep["overall"]
        rates = ", ".join(f"{k} {o[k]:.1%}" for k in keys if o[k] is not None)
        print(f"{path:>12}: {rates}, p50 {o['p50_ms']:.0f} ms, p95 {o['p95_ms']:.0f} ms")
    with_h = result["paths"]["shipped"]["by_kind"]["followup"]["gold_at_3"]
    print(f"two-turn gold@3: {with_h:.1%} with history, "
          f"{result['followups_without_history']['gold_at_3']:.1%} without, "
          f"{result['followups_llm_rewrite']['gold_at_3']:.1%} rewritten by the LLM")
    print(f"wrote {save('answer_quality', result)}")


if __name__ == "__main__":
    main()

"""Answer quality against the deadline: the same RAG questions under deadlines from tight to
unconstrained, with the response cache off.

    .venv/bin/python -m evals.budget_sweep          # full size: 10 questions x 8 deadlines
    (evals/budget_sweep.ipynb runs it small in CI and plots it)

Per question and deadline it records how the answer was made (LLM, extractive fallback),
whether it was truncated, whether the gold help-centre article was among the sources, and
completeness: the share of the unconstrained answer's content words the answer contains
(1.0 = everything the model says with all the time it wants).
Writes evals/results/budget_sweep.json.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
from pathlib import Path
from typing import Any

from evals.common import save
from pipeline.sdk import Pipeline
from pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
# (question, the demo article that answers it)
QUESTIONS = [
    ("what does an arranged overdraft cost", "accounts-overdraft"),
    ("how long does a SEPA transfer take", "transfers-sepa"),
    ("how do I dispute a card payment", "cards-chargeback"),
    ("can I repay my personal loan early", "loans-early-repay"),
    ("how do I turn on two-factor authentication", "security-2fa-enable"),
    ("what are the fees for a business account", "business-fees"),
    ("how do I download my statements", "accounts-statements"),
    ("I sent money to the wrong account", "transfers-wrong"),
    ("what are the mortgage rates", "mortgage-rates"),
    ("how do I set up a standing order", "transfers-standing"),
]
DEADLINES_MS = [300, 600, 1000, 1500, 2500, 4000, 8000]
UNCONSTRAINED_MS = 30_000
STOP = {"the", "a", "an", "to", "of", "and", "or", "in", "on", "for", "your", "you", "is",
        "are", "it", "be", "can", "with", "this", "that", "by", "we", "our", "i"}


def eval_settings(max_tokens: int | None = None,
                  generation_budget_ms: float | None = None) -> Settings:
    """ragpacer.yaml without the process environment; with EVAL_LLM_URL, that running engine
    (CI points the notebooks at one) instead of starting the managed one."""
    overrides: dict[str, Any] = {"cache": {"enabled": False}, "tracing": {"exporter": "none"}}
    url = os.environ.get("EVAL_LLM_URL")
    # Greedy decoding: answers then differ only where the deadline cuts them, which is what
    # completeness measures (at the shipped 0.2, sampling alone moved it 0.07-0.53).
    model: dict[str, Any] = {"name": "smollm2", "url": url or "http://127.0.0.1:8000/v1",
                             "temperature": 0.0}
    if max_tokens:
        model["max_tokens"] = max_tokens
    overrides["llm"] = {"models": [model], **({"engine": "external"} if url else {})}
    if generation_budget_ms:  # the sweep: the deadline, not the stage budget, is the limit
        overrides["stages"] = {"generation": {"budget_ms": generation_budget_ms}}
    settings = load_settings(ROOT / "ragpacer.yaml", environ={}, overrides=overrides)
    if generation_budget_ms:  # a route's own generation budget (lending: 2,300) too
        for route in settings.routing.routes.values():
            if "generation" in route.budgets:
                route.budgets["generation"] = generation_budget_ms
    return settings


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9£€$%.]+", text.lower()) if w not in STOP}


async def sweep(pipeline: Pipeline, questions: list[tuple[str, str]],
                deadlines: list[float], progress: Any = print) -> list[dict[str, Any]]:
    rows = []
    for question, gold in questions:
        full = await pipeline.arun(question, deadline_ms=UNCONSTRAINED_MS)
        reference = words(full.answer)
        for d in [*deadlines, UNCONSTRAINED_MS]:
            r = full if d == UNCONSTRAINED_MS else await pipeline.arun(question, deadline_ms=d)
            got = words(r.answer)
            rows.append({
                "question": question, "deadline_ms": d, "elapsed_ms": r.elapsed_ms,
                "answer_kind": r.answer_kind, "truncated": r.truncated,
                "degraded": list(r.degraded),
                "gold_in_sources": any(s.id.split("#")[0] == gold for s in r.sources),
                "completeness": len(got & reference) / max(len(reference), 1),
                "tokens": (r.usage or {}).get("completion_tokens", 0)})
        progress(f"{question}: done")
    return rows


def by_deadline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in sorted({r["deadline_ms"] for r in rows}):
        rs = [r for r in rows if r["deadline_ms"] == d]
        out.append({
            "deadline_ms": d, "n": len(rs),
            "llm_share": sum(r["answer_kind"] == "llm" for r in rs) / len(rs),
            "truncated_share": sum(r["truncated"] for r in rs) / len(rs),
            "gold_in_sources": sum(r["gold_in_sources"] for r in rs) / len(rs),
            "completeness": statistics.fmean(r["completeness"] for r in rs),
            "elapsed_p50_ms": statistics.median(r["elapsed_ms"] for r in rs)})
    return out


async def run(quick: bool) -> dict[str, Any]:
    questions = QUESTIONS[:3] if quick else QUESTIONS
    deadlines = [300, 1000, 2500] if quick else DEADLINES_MS
    pipeline = Pipeline(eval_settings(max_tokens=48 if quick else None,
                                      generation_budget_ms=UNCONSTRAINED_MS))
    await pipeline.astart(print)
    try:
        rows = await sweep(pipeline, questions, deadlines)
    finally:
        await pipeline.aclose()
    return {"quick": quick, "rows": rows, "by_deadline": by_deadline(rows)}


def main() -> None:
    result = asyncio.run(run(quick=False))
    for r in result["by_deadline"]:
        print(f"{r['deadline_ms']:>7} ms: LLM {r['llm_share']:.0%}, truncated "
              f"{r['truncated_share']:.0%}, gold source {r['gold_in_sources']:.0%}, "
              f"completeness {r['completeness']:.2f}, p50 {r['elapsed_p50_ms']:.0f} ms")
    print(f"wrote {save('budget_sweep', result)}")


if __name__ == "__main__":
    main()

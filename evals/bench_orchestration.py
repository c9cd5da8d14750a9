"""Orchestration overhead and deadline accuracy of ragpacer's runner + graph.

Rerun:  .venv/bin/python -m evals.bench_orchestration [--requests 1000]

Overhead = end-to-end time minus the time spent inside stage bodies, with instant stages.
Baselines in the same run: a bare LangGraph graph of the same stages, one node each (the
straightforward graph; ragpacer runs stages that always follow each other as one node), and
plain sequential asyncio calls. Deadline accuracy: actual end - deadline for requests cut by
the deadline (negative: early).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, ClassVar

from langgraph.graph import END, START, StateGraph

from evals.common import percentiles, save
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.core.stage import StageBase
from ragpacer.pipeline.core.state import RequestState
from ragpacer.pipeline.sdk import Pipeline


class Instant(StageBase):
    fallbacks: ClassVar[frozenset[str]] = frozenset({"default", "cheaper"})

    def __init__(self, name: str, update: dict[str, Any], delay_s: float = 0.0) -> None:
        self.name = name
        self.update = update
        self.delay_s = delay_s

    async def __call__(self, state: Any, ctx: Any) -> dict[str, Any]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.update

    def fallback(self, kind: str, state: Any, ctx: Any) -> dict[str, Any]:
        if self.name == "generation":
            return {"answer": "fallback", "answer_kind": "extractive"}
        return self.update


def instant_stages(generation_delay_s: float = 0.0) -> dict[str, Instant]:
    return {
        "input_guardrails": Instant("input_guardrails", {}),
        "intent": Instant("intent", {"route": "rag", "intent": "x", "intent_confidence": 0.9,
                                     "low_confidence": False}),
        "retrieval": Instant("retrieval", {"sources": []}),
        "generation": Instant("generation", {"answer": "ok", "answer_kind": "llm"},
                              generation_delay_s),
        "output_guardrails": Instant("output_guardrails", {}),
    }


def settings():  # type: ignore[no-untyped-def]
    return load_settings(environ={}, overrides={"cache": {"enabled": False}})


async def bench_ragpacer(n: int) -> tuple[list[float], list[float]]:
    p = Pipeline(settings(), stages=instant_stages())
    overhead, total = [], []
    for i in range(n + 100):
        t0 = time.perf_counter()
        result = await p.arun(f"question {i}")
        e2e = (time.perf_counter() - t0) * 1000
        if i >= 100:  # warm-up
            total.append(e2e)
            overhead.append(e2e - sum(r.body_ms for r in result.stages))
    await p.aclose()
    return overhead, total


async def bench_bare_langgraph(n: int) -> list[float]:
    async def node(state: RequestState) -> dict[str, Any]:
        return {}

    async def intent(state: RequestState) -> dict[str, Any]:
        return {"route": "rag"}

    async def router(state: RequestState) -> list[str]:
        return ["retrieval"]

    g = StateGraph(RequestState)
    for name in ("input_guardrails", "retrieval", "generation", "output_guardrails"):
        g.add_node(name, node)
    g.add_node("intent", intent)
    g.add_edge(START, "input_guardrails")
    g.add_edge("input_guardrails", "intent")
    g.add_conditional_edges("intent", router, ["retrieval", "generation"])
    g.add_edge("retrieval", "generation")
    g.add_edge("generation", "output_guardrails")
    g.add_edge("output_guardrails", END)
    graph = g.compile()
    out = []
    for i in range(n + 100):
        t0 = time.perf_counter()
        await graph.ainvoke({"query": f"q{i}", "records": [], "flags": []})
        if i >= 100:
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def bench_plain(n: int) -> list[float]:
    stages = list(instant_stages().values())
    out = []
    for i in range(n + 100):
        t0 = time.perf_counter()
        state: dict[str, Any] = {"query": f"q{i}"}
        for s in stages:
            state.update(await s(state, None))
        if i >= 100:
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def bench_deadline(n: int, deadline_ms: float) -> list[float]:
    p = Pipeline(settings(), stages=instant_stages(generation_delay_s=10.0))
    errors = []
    for i in range(n):
        p.runner.reset_windows()  # measure the cut itself, not the skip-before-start path
        d_at = time.monotonic() + deadline_ms / 1000
        result = await p.arun(f"cut {i}", deadline_ms=deadline_ms)
        end = time.monotonic()
        gen = next(r for r in result.stages if r.name == "generation")
        assert gen.outcome.value == "timeout", gen
        errors.append((end - d_at) * 1000)  # negative: ended before the deadline
    await p.aclose()
    return errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--deadline-requests", type=int, default=200)
    args = ap.parse_args()
    overhead, total = asyncio.run(bench_ragpacer(args.requests))
    bare = asyncio.run(bench_bare_langgraph(args.requests))
    plain = asyncio.run(bench_plain(args.requests))
    cut = asyncio.run(bench_deadline(args.deadline_requests, 300.0))
    rows = {"ragpacer overhead": percentiles(overhead), "ragpacer end-to-end": percentiles(total),
            "bare LangGraph, same shape": percentiles(bare),
            "plain sequential asyncio": percentiles(plain),
            "end - deadline, requests cut (negative: early)": percentiles(cut)}
    print(f"{'ms':34} {'p50':>8} {'p95':>8} {'p99':>8}")
    for name, p in rows.items():
        print(f"{name:34} {p['p50']:8.3f} {p['p95']:8.3f} {p['p99']:8.3f}")
    for q in ("p50", "p99"):
        print(f"ratio at {q}: ragpacer e2e / bare LangGraph = "
              f"{rows['ragpacer end-to-end'][q] / rows['bare LangGraph, same shape'][q]:.2f}; "
              f"/ plain asyncio = "
              f"{rows['ragpacer end-to-end'][q] / rows['plain sequential asyncio'][q]:.1f}")
    print("saved", save("bench_orchestration", {"args": vars(args), "results": rows}))


if __name__ == "__main__":
    main()

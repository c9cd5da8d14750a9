"""The one place that applies deadline, fallback and observation to every stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from ragpacer.pipeline.core.budget import LatencyWindow, allot
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.cutoff import run_until
from ragpacer.pipeline.core.errors import InputError, StageFailed
from ragpacer.pipeline.core.plan import ANY_ROUTE, StagePlan
from ragpacer.pipeline.core.stage import (
    Degraded,
    FallbackKind,
    Outcome,
    Stage,
    StageRecord,
    Update,
)
from ragpacer.pipeline.core.state import RequestState

log = logging.getLogger("ragpacer.runner")


DETAIL_CHARS = 300
_ADDED = ("flags", "records")  # the state's keys whose reducer adds a node's list to them
SELF_LIMIT_GRACE_S = 0.025
Observer = Callable[[StageRecord, RequestState, RunContext], None]


class StageRunner:
    def __init__(
        self,
        plans: dict[str, dict[str, StagePlan]],
        observers: Sequence[Observer] = (),
        *,
        redact: Callable[[str], str],
    ) -> None:
        """``redact``: applied to every failure detail a record, a span or a log line carries
        (an error message may echo the prompt, PII included); the SDK passes the guardrails'
        PII redaction."""
        self._plans = plans
        self._redact = redact
        self._windows: dict[str, LatencyWindow] = {}
        self.observers = list(observers)

    def _detail(self, text: str) -> str:
        return self._redact(text)[:DETAIL_CHARS]

    def window(self, name: str) -> LatencyWindow:
        w = self._windows.get(name)
        if w is None:
            w = self._windows[name] = LatencyWindow()
        return w

    def reset_windows(self) -> None:
        """Forget measured durations (after a deploy, or between benchmark phases)."""
        self._windows.clear()

    def plan_for(self, stage: str, route: str | None) -> StagePlan:
        plan = self._plans.get(route or ANY_ROUTE) or self._plans[ANY_ROUTE]
        return plan.get(stage) or self._plans[ANY_ROUTE][stage]

    async def run(
        self, stage: Stage, state: RequestState, ctx: RunContext
    ) -> tuple[Update, StageRecord]:
        t0 = time.monotonic()
        plan = self.plan_for(stage.name, state.get("route"))
        allotment = allot(ctx.deadline, plan.budget_ms, plan.reserve_ms)
        window = self.window(stage.name)
        # A self-limiting stage (generation) sizes its work to the time it gets and keeps
        # what it has at its cut-off: its p95 sits at its budget by design, which says
        # nothing about whether it can give a useful (shorter) answer. It decides itself.
        self_limiting = stage.self_limiting
        if allotment.budget_ms <= 0 or (not self_limiting and stage.skip_when_slow
                                        and window.cannot_fit(allotment.budget_ms)):
            why = f"{allotment.budget_ms:.1f} ms left, p95 {window.p95() or 0:.1f} ms"
            return self._fallback(
                stage, plan, state, ctx, Outcome.SKIPPED, why, t0, 0.0, allotment.budget_ms
            )

        b0 = time.monotonic()
        try:
            # A self-limiting stage (generation) stops at its own cut-off and keeps what it has;
            # the runner's hard cut comes a little later, or, on a busy loop where both timers
            # fire in one iteration, the outer cancellation would win and lose partial text.
            hard = allotment.deadline.at + (
                SELF_LIMIT_GRACE_S if self_limiting else 0.0
            )
            out = await run_until(stage(state, ctx.for_stage(allotment.deadline)), hard)
        except TimeoutError:
            body = (time.monotonic() - b0) * 1000.0
            window.add(body)
            detail = f"cut at {allotment.budget_ms:.1f} ms"
            return self._fallback(
                stage, plan, state, ctx, Outcome.TIMEOUT, detail, t0, body, allotment.budget_ms
            )
        except InputError:
            raise
        except Exception as exc:  # a stage's own failure must never fail the request
            body = (time.monotonic() - b0) * 1000.0
            detail = self._detail(f"{type(exc).__name__}: {exc}")
            log.warning("stage %s failed: %s", stage.name, detail)
            return self._fallback(
                stage, plan, state, ctx, Outcome.ERROR, detail, t0, body, allotment.budget_ms
            )
        body = (time.monotonic() - b0) * 1000.0
        window.add(body)

        outcome, note = Outcome.OK, None
        if isinstance(out, Degraded):
            outcome, note, out = Outcome.DEGRADED, self._detail(out.reason), out.update
        return out, self._record(stage, state, ctx, t0, allotment.budget_ms, outcome,
                                 note, body, None)

    def _fallback(
        self,
        stage: Stage,
        plan: StagePlan,
        state: RequestState,
        ctx: RunContext,
        outcome: Outcome,
        detail: str,
        t0: float,
        body_ms: float,
        budget_ms: float,
    ) -> tuple[Update, StageRecord]:
        kind = plan.fallback
        if kind == "fail":
            raise StageFailed(stage.name, detail)
        update: Update = {}
        if kind != "skip":
            try:
                update = stage.fallback(kind, state, ctx)
            except Exception as exc:
                why = self._detail(f"{detail}; fallback failed: {exc!r}")
                raise StageFailed(stage.name, why) from exc
        return update, self._record(stage, state, ctx, t0, max(budget_ms, 0.0), outcome,
                                    detail, body_ms, kind)

    def _record(self, stage: Stage, state: RequestState, ctx: RunContext, t0: float,
                budget_ms: float, outcome: Outcome, detail: str | None, body_ms: float,
                fallback: FallbackKind | None) -> StageRecord:
        """The stage's record, as the observers (metrics, tests) see it at once."""
        record = StageRecord(
            name=stage.name,
            budget_ms=budget_ms,
            elapsed_ms=(time.monotonic() - t0) * 1000.0,
            outcome=outcome,
            fallback=fallback,
            detail=detail,
            body_ms=body_ms,
            offset_ms=(t0 - ctx.deadline.started) * 1000.0,
        )
        self._observe(record, state, ctx)
        return record

    def _observe(self, record: StageRecord, state: RequestState, ctx: RunContext) -> None:
        for observer in self.observers:
            try:
                observer(record, state, ctx)
            except Exception:  # observation must never fail a request
                log.exception("stage observer failed")

    def node(self, stage: Stage) -> Callable[..., Any]:
        """Wrap a stage as a LangGraph node: state in, partial state out, plus its record."""

        async def run_node(state: RequestState, runtime: Any) -> Update:
            update, record = await self.run(stage, state, runtime.context)
            return {**update, "records": [record]}

        run_node.__name__ = f"run_{stage.name}"
        return run_node

    def sequence(self, stages: Sequence[Stage]) -> Callable[..., Any]:
        """Stages that always run one after another as one node: one LangGraph superstep
        instead of one per stage (each costs about 70 µs of bookkeeping here). Each stage
        sees the updates of those before it; the reducer keys (``flags``, ``records``)
        accumulate as the graph's reducers would."""

        async def run_sequence(state: RequestState, runtime: Any) -> Update:
            merged: dict[str, Any] = {"flags": [], "records": []}
            view: dict[str, Any] = dict(state)
            for stage in stages:
                update, record = await self.run(stage, cast(RequestState, view),
                                                runtime.context)
                for key, value in update.items():
                    if key in _ADDED:
                        merged[key] = [*merged[key], *value]
                        view[key] = [*view.get(key, []), *value]
                    else:
                        merged[key] = view[key] = value
                merged["records"].append(record)
                view["records"] = [*view.get("records", []), record]
            return merged

        run_sequence.__name__ = "run_" + "_".join(s.name for s in stages)
        return run_sequence

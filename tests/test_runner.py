from typing import Any

import pytest

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.errors import StageFailed
from ragpacer.pipeline.core.plan import StagePlan
from ragpacer.pipeline.core.runner import StageRunner
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.core.stage import Outcome
from tests.stages import Probe


def runner_for(name: str, budget_ms: float, fallback: str, reserve_ms: float = 0.0):
    plans = {"*": {name: StagePlan(budget_ms, reserve_ms, fallback)}}
    return StageRunner(plans, redact=lambda text: text)


def ctx(deadline_ms: float = 2000) -> RunContext:
    return RunContext(Deadline.after_ms(deadline_ms), load_settings(environ={}))


async def test_fast_stage_is_ok_with_positive_slack() -> None:
    stage = Probe("features", output={"features": {"tier": "gold"}})
    update, record = await runner_for("features", 100, "default").run(stage, {}, ctx())
    assert update == {"features": {"tier": "gold"}}
    assert record.outcome is Outcome.OK and record.slack_ms > 0 and record.fallback is None


async def test_slow_stage_is_cut_at_its_budget_and_falls_back() -> None:
    stage = Probe("features", delay_s=5.0)
    update, record = await runner_for("features", 30, "default").run(stage, {}, ctx())
    assert record.outcome is Outcome.TIMEOUT and record.fallback == "default"
    assert update == {"features": {"tier": "standard"}}
    assert record.elapsed_ms < 2000  # cut, not waited out (the body sleeps 5 s)


async def test_stage_error_uses_fallback_and_is_reported() -> None:
    stage = Probe("tools", fail=True)
    update, record = await runner_for("tools", 100, "skip").run(stage, {}, ctx())
    assert update == {} and record.outcome is Outcome.ERROR
    assert "exploded" in (record.detail or "")


async def test_a_failure_detail_passes_through_the_redactor() -> None:
    """An error message may echo the prompt: what a record keeps is what ``redact`` made of
    it, bounded; the SDK passes the guardrails' PII redaction."""
    plans = {"*": {"tools": StagePlan(100, 0, "skip")}}
    runner = StageRunner(plans, redact=lambda text: text.replace("exploded", "[X]") * 100)
    _, record = await runner.run(Probe("tools", fail=True), {}, ctx())
    assert "[X]" in (record.detail or "") and "exploded" not in (record.detail or "")
    assert len(record.detail or "") == 300


async def test_stage_that_cannot_fit_is_skipped_before_it_starts() -> None:
    runner = runner_for("tools", 200, "cheaper", reserve_ms=0)
    slow = Probe("tools", delay_s=0.0)
    for _ in range(30):
        runner.window("tools").add(150.0)  # the stage usually takes 150 ms
    update, record = await runner.run(slow, {}, ctx(deadline_ms=100))
    assert slow.calls == 0, "the body must not start when its p95 cannot fit"
    assert record.outcome is Outcome.SKIPPED and record.fallback == "cheaper"
    assert update == {"tools_fallback": "cheaper"}


async def test_a_self_limiting_stage_is_never_skipped_for_its_p95() -> None:
    """Generation stops at its cut-off with what it has: its p95 sits at its budget by
    design, and skipping it on that account would throw away every (shorter) answer."""
    runner = runner_for("generation", 200, "cheaper", reserve_ms=0)
    gen = Probe("generation")
    gen.self_limiting = True  # type: ignore[attr-defined]
    for _ in range(30):
        runner.window("generation").add(200.0)
    _, record = await runner.run(gen, {}, ctx(deadline_ms=100))
    assert gen.calls == 1 and record.outcome is Outcome.OK


async def test_reserve_leaves_time_for_later_stages() -> None:
    runner = runner_for("retrieval", 5000, "skip", reserve_ms=1500)
    stage = Probe("retrieval")
    _, record = await runner.run(stage, {}, ctx(deadline_ms=2000))
    assert record.budget_ms <= 500


async def test_no_fallback_raises_stage_failed() -> None:
    stage = Probe("features", fail=True)
    with pytest.raises(StageFailed, match="features"):
        await runner_for("features", 100, "fail").run(stage, {}, ctx())


async def test_observers_see_every_record_and_cannot_break_a_request() -> None:
    seen: list[Any] = []

    def broken(record, state, c):  # type: ignore[no-untyped-def]
        raise RuntimeError("observer bug")

    runner = runner_for("features", 100, "default")
    runner.observers += [lambda r, s, c: seen.append(r.name), broken]
    await runner.run(Probe("features"), {}, ctx())
    assert seen == ["features"]


async def test_a_skipped_stage_is_probed_again_and_recovers() -> None:
    runner = runner_for("tools", 100, "skip")
    window = runner.window("tools")
    window.probe_after_s = 0.05
    for _ in range(30):
        window.add(500.0)  # it used to be slow
    stage = Probe("tools")
    _, first = await runner.run(stage, {}, ctx())
    assert first.outcome is Outcome.SKIPPED and stage.calls == 0
    import asyncio

    await asyncio.sleep(0.06)
    _, probe = await runner.run(stage, {}, ctx())
    assert probe.outcome is Outcome.OK and stage.calls == 1

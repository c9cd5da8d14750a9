import time

import pytest

from ragpacer.pipeline.core.budget import LatencyWindow, allot
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.plan import build_plan
from ragpacer.pipeline.core.settings import load_settings


def test_deadline_rejects_non_positive() -> None:
    with pytest.raises(ValueError):
        Deadline.after_ms(0)


def test_allotment_is_budget_or_remaining_minus_reserve() -> None:
    d = Deadline.after_ms(1000)
    assert allot(d, budget_ms=50, reserve_ms=100).budget_ms == 50
    squeezed = allot(d, budget_ms=5000, reserve_ms=300).budget_ms
    assert 600 < squeezed <= 700
    assert allot(d, budget_ms=50, reserve_ms=5000).budget_ms < 0
    # The stage's own cut-off never lies past the request's deadline.
    assert allot(d, budget_ms=5000, reserve_ms=0).deadline.at <= d.at


def test_sooner_picks_the_earlier_deadline() -> None:
    d = Deadline(at=time.monotonic() + 0.010)
    assert d.sooner(1000).at == d.at
    assert d.sooner(1).at < d.at


def test_latency_window_needs_samples_then_tracks_p95() -> None:
    w = LatencyWindow(size=100, min_samples=20)
    for _ in range(19):
        w.add(1.0)
    assert w.p95() is None
    for i in range(100):
        w.add(100.0 if i % 10 == 0 else 1.0)  # 10% slow
    assert w.p95() == 100.0


def test_an_old_burst_of_slow_samples_stops_skipping_the_stage() -> None:
    """A cold start must not keep a stage skipped until fast probes dilute it."""
    w = LatencyWindow(min_samples=20, probe_after_s=60.0, max_age_s=0.05)
    for _ in range(30):
        w.add(100.0)
    assert w.cannot_fit(30.0), "a fresh slow p95 skips the stage"
    time.sleep(0.06)
    assert not w.cannot_fit(30.0), "once those samples are old they decide nothing"
    assert w.p95() is None


def test_plan_reserves_for_later_stages_and_parallel_branches_share() -> None:
    s = load_settings(
        environ={},
        overrides={
            "stages": {"features": {"reserve_ms": 7}, "tools": {"reserve_ms": 9}},
            "routing": {"routes": {"rag": {"stages": ["features", "retrieval", "tools"]}}},
        },
    )
    plan = build_plan(s)["rag"]
    gen, out = s.stages["generation"].reserve_ms, s.stages["output_guardrails"].reserve_ms
    out += s.stages["grounding"].reserve_ms
    assert plan["retrieval"].reserve_ms == gen + out
    assert plan["features"].reserve_ms == plan["tools"].reserve_ms == gen + out
    # Before the branches: the largest branch reserve, not their sum.
    assert plan["intent"].reserve_ms == 9 + gen + out
    assert plan["output_guardrails"].reserve_ms == 0

"""Per-stage budgets: how much of the remaining deadline a stage may use."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from ragpacer.pipeline.core.deadline import Deadline


class LatencyWindow:
    """Recent durations of one stage, for the 'can it still finish?' check before it starts.

    Only samples younger than ``max_age_s`` count: a burst of slow calls (a cold start, a
    neighbour hogging the CPU) stops deciding anything once it is that old, instead of
    skipping the stage until enough fast probes have diluted it.
    """

    __slots__ = ("_last", "_ms", "_p95", "_since_sort", "_when", "max_age_s", "min_samples",
                 "probe_after_s")

    def __init__(self, size: int = 200, min_samples: int = 20, probe_after_s: float = 1.0,
                 max_age_s: float = 10.0):
        # When each sample was taken, and its duration: apart, so the p95 sorts a deque of
        # floats in C, not a generator over pairs.
        self._when: deque[float] = deque(maxlen=size)
        self._ms: deque[float] = deque(maxlen=size)
        self._p95: float | None = None
        self._since_sort = 0
        self._last = time.monotonic()
        self.min_samples = min_samples
        # A stage skipped for being slow adds no samples, so its p95 would never recover:
        # after this long without a sample, one request is let through as a probe.
        self.probe_after_s = probe_after_s
        self.max_age_s = max_age_s

    def cannot_fit(self, allotted_ms: float) -> bool:
        """True when the stage's recent p95 exceeds the time it would get."""
        if self._p95 is None or self._p95 <= allotted_ms:
            return False
        now = time.monotonic()
        if self._when and now - self._when[0] > self.max_age_s:
            self._expire(now)
            if self._p95 is None or self._p95 <= allotted_ms:
                return False
        if now - self._last >= self.probe_after_s:
            self._last = now  # one probe at a time
            return False
        return True

    def add(self, ms: float) -> None:
        self._last = time.monotonic()
        self._when.append(self._last)
        self._ms.append(ms)
        self._since_sort += 1
        # Re-sorting 200 floats costs ~10 us: do it every 16 samples, not per request.
        if self._since_sort >= 16 or self._p95 is None:
            self._refresh()

    def _expire(self, now: float) -> None:
        while self._when and now - self._when[0] > self.max_age_s:
            self._when.popleft()
            self._ms.popleft()
        self._refresh()

    def _refresh(self) -> None:
        self._since_sort = 0
        if len(self._ms) < self.min_samples:
            self._p95 = None
            return
        ordered = sorted(self._ms)
        self._p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def p95(self) -> float | None:
        """The running p95 in ms, or None until enough samples exist."""
        return self._p95


# Not frozen, though never changed: frozen costs ~1 us per object made (hot path).
@dataclass(slots=True)
class Allotment:
    budget_ms: float
    deadline: Deadline


def allot(deadline: Deadline, budget_ms: float, reserve_ms: float) -> Allotment:
    """A stage runs under min(its budget, remaining - reserve for the stages still to run)."""
    remaining = deadline.remaining_ms()
    ms = min(budget_ms, remaining - reserve_ms)
    return Allotment(budget_ms=ms, deadline=deadline.sooner(max(ms, 0.0)))

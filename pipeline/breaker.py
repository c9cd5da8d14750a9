"""A circuit breaker for calls to a shared service (Redis for the cache and the rate limits).

Closed, calls go through. A failure opens it: for ``backoff_s`` (doubling up to ``max_s``
while failures continue) callers are refused at once instead of each paying a connect
timeout. When the period ends it is half-open: exactly one caller probes, the others are
still refused until the probe's outcome is known; a success closes it, a failure opens it
again. One event loop drives it, so its state needs no lock.

The probe belongs to the task that claimed it: a call admitted before the circuit opened and
cancelled meanwhile does not hand the probe on. A probe that never reports (its task lost
without an outcome) is given to the next caller after ``max_s``.
"""

from __future__ import annotations

import asyncio
import time


def _task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a synchronous caller)
        return None


class CircuitBreaker:
    def __init__(self, backoff_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_backoff_s = backoff_s
        self.max_s = max_s
        self._backoff_s = backoff_s
        self._open_until = 0.0  # 0: closed
        self._probing = False
        self._probe_since = 0.0
        self._probe_task: asyncio.Task[object] | None = None

    @property
    def closed(self) -> bool:
        return self._open_until == 0.0

    def _probe_pending(self, now: float) -> bool:
        return self._probing and now - self._probe_since < self.max_s

    def available(self) -> bool:
        """Whether ``allow`` would let a call through now, without claiming the probe."""
        now = time.monotonic()
        return self.closed or (not self._probe_pending(now) and now >= self._open_until)

    def release(self) -> None:
        """A call that ended without an outcome (cancelled): if it was the probe, the next
        caller probes."""
        if self._probing and self._probe_task is _task():
            self._probing, self._probe_task = False, None

    def retry_in_s(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def allow(self) -> bool:
        """Whether this caller may call: always when closed; once per open period, for the
        one probe, when half-open."""
        if self.closed:
            return True
        now = time.monotonic()
        if self._probe_pending(now) or now < self._open_until:
            return False
        self._probing, self._probe_since, self._probe_task = True, now, _task()
        return True

    def success(self) -> None:
        self._open_until, self._probing, self._probe_task = 0.0, False, None
        self._backoff_s = self.first_backoff_s

    def failure(self) -> None:
        self._open_until = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.max_s)
        self._probing, self._probe_task = False, None

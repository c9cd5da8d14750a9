"""A circuit breaker for calls to a shared service (Redis for the cache and the rate limits).

Closed, calls go through. A failure opens it: for ``backoff_s`` (doubling up to ``max_s``
while failures continue) callers are refused at once instead of each paying a connect
timeout. When the period ends it is half-open: exactly one caller probes, the others are
still refused until the probe's outcome is known; a success closes it, a failure opens it
again. One event loop drives it, so its state needs no lock.
"""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, backoff_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_backoff_s = backoff_s
        self.max_s = max_s
        self._backoff_s = backoff_s
        self._open_until = 0.0  # 0: closed
        self._probing = False

    @property
    def closed(self) -> bool:
        return self._open_until == 0.0

    def available(self) -> bool:
        """Whether ``allow`` would let a call through now, without claiming the probe."""
        return self.closed or (not self._probing and time.monotonic() >= self._open_until)

    def release(self) -> None:
        """A probe that ended without an outcome (cancelled): the next caller probes."""
        self._probing = False

    def retry_in_s(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def allow(self) -> bool:
        """Whether this caller may call: always when closed; once per open period, for the
        one probe, when half-open."""
        if self.closed:
            return True
        if self._probing or time.monotonic() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._open_until, self._probing = 0.0, False
        self._backoff_s = self.first_backoff_s

    def failure(self) -> None:
        self._open_until = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.max_s)
        self._probing = False

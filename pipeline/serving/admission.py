"""Admission control: reject early what the queue would make late.

A bounded number of requests run at once; a bounded number wait. A request is turned away
at once (503 + Retry-After) when the queue is full, or when the expected wait (queue position
x mean service time / slots) already exceeds its deadline: better a fast "retry later" than
accepting work that cannot finish in time.

Shedding is fair between tenants (API keys): one tenant may hold at most its share of the
queue, max_queue // (tenants waiting + 1), so a single flooding key always leaves room for
another key's requests rather than crowding them out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.errors import Overloaded


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0
        self.mean_ms = 50.0  # EWMA of service time, updated as requests finish
        self.rejected = 0
        self._waiting_by: Counter[str] = Counter()

    def _expected_wait_ms(self) -> float:
        return math.ceil((self.waiting + 1) / self.max_concurrency) * self.mean_ms \
            if self.running >= self.max_concurrency else 0.0

    def _over_share(self, tenant: str | None) -> bool:
        if tenant is None:
            return False
        others = len(self._waiting_by) - (tenant in self._waiting_by)
        return self._waiting_by[tenant] >= max(1, self.max_queue // (others + 2))

    async def enter(self, deadline: Deadline, tenant: str | None = None) -> Slot:
        """Take one of the slots (waiting for it while the deadline allows), or raise
        Overloaded; the caller releases the slot it gets (``Slot.release``). Not a context
        manager: a stream holds its slot beyond the handler, and ``asynccontextmanager`` with
        an exit stack cost a tenth of a cache hit's time in the server."""
        wait = self._expected_wait_ms()
        if self.running >= self.max_concurrency and (
                self.waiting >= self.max_queue or wait > deadline.remaining_ms()
                or self._over_share(tenant)):
            self.rejected += 1
            raise Overloaded("server overloaded: retry shortly",
                             max(wait, self.mean_ms) / 1000.0)
        queued_at = time.monotonic()
        if self._slots.locked():
            await self._wait(deadline, tenant)
        else:  # a free slot: taken at once, no timer to arm and cancel
            await self._slots.acquire()
        self.running += 1
        started = time.monotonic()
        return Slot(self, (started - queued_at) * 1000.0, started)

    async def _wait(self, deadline: Deadline, tenant: str | None) -> None:
        self.waiting += 1
        if tenant is not None:
            self._waiting_by[tenant] += 1
        try:
            async with asyncio.timeout_at(deadline.at):
                await self._slots.acquire()
        except TimeoutError:
            self.rejected += 1
            raise Overloaded("server overloaded: no slot before the deadline",
                             self.mean_ms / 1000.0) from None
        finally:
            self.waiting -= 1
            if tenant is not None:
                self._waiting_by[tenant] -= 1
                if not self._waiting_by[tenant]:
                    del self._waiting_by[tenant]

    def _leave(self, started: float) -> None:
        self.running -= 1
        self._slots.release()
        self.mean_ms += 0.1 * ((time.monotonic() - started) * 1000.0 - self.mean_ms)


class Slot:
    """A held admission slot: ``queued_ms`` is how long the request waited for it."""

    __slots__ = ("_admission", "_started", "queued_ms")

    def __init__(self, admission: Admission, queued_ms: float, started: float) -> None:
        self._admission: Admission | None = admission
        self.queued_ms = queued_ms
        self._started = started

    def release(self) -> None:
        """Give the slot back; idempotent (a stream's end and its response's background task
        both call it, whichever comes first)."""
        if self._admission is not None:
            admission, self._admission = self._admission, None
            admission._leave(self._started)

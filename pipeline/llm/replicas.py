"""Several engines serving one model (``llm.models[].urls``).

Each call goes to the replica with the fewest calls in flight among those that are not
ejected. A replica that cannot be reached or answers 5xx is ejected by its own circuit
breaker (1 s, doubling to 30 s while it keeps failing), then probed back by exactly one call.
Meanwhile its model list is polled: a replica that stopped answering and answers again (a
restarted engine) is readmitted at once instead of after the rest of its backoff. One event
loop drives a set, so it needs no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from ragpacer.pipeline.breaker import CircuitBreaker

EJECT_S = 1.0
MAX_EJECT_S = 30.0


@dataclass(eq=False)
class Replica:
    url: str  # OpenAI-compatible base URL ending in /v1
    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(EJECT_S, MAX_EJECT_S))
    readmitted: int = 0  # times its model list answered again while it was ejected
    watch: asyncio.Task[None] | None = None  # polls its model list while it is ejected


class ReplicaSet:
    def __init__(self, urls: Sequence[str], max_in_flight: int | None = None) -> None:
        self.replicas = [Replica(u) for u in urls]
        self.max_in_flight = max_in_flight  # per replica; None: no limit
        self.refused = 0  # calls turned away because every replica was full
        self._turn = 0  # rotates ties, so equally idle replicas share the calls

    def has_room(self, replica: Replica) -> bool:
        return self.max_in_flight is None or replica.in_flight < self.max_in_flight

    def full(self) -> bool:
        """Every replica holds as many calls as it may: a new call would only queue."""
        return not any(self.has_room(r) for r in self.replicas)

    def pick(self, tried: Sequence[Replica] = ()) -> Replica | None:
        """The least busy replica not tried yet with room for a call, whose breaker lets a
        call through (claiming the probe of one half-open); None when there is none."""
        n = len(self.replicas)
        if n == 1:  # nothing to fail over to: the call itself says how the engine is
            only = self.replicas[0]
            return None if tried or not self.has_room(only) else only
        self._turn = (self._turn + 1) % n
        order = [self.replicas[(self._turn + i) % n] for i in range(n)]
        for replica in sorted((r for r in order if r not in tried and self.has_room(r)
                               and r.breaker.available()), key=lambda r: r.in_flight):
            if replica.breaker.allow():
                return replica
        return None

    def load(self) -> float:
        """Calls in flight per replica that takes calls: how many share an engine's time."""
        up = [r for r in self.replicas if r.breaker.available()] or self.replicas
        return sum(r.in_flight for r in up) / len(up)

    def any_available(self, tried: Sequence[Replica]) -> bool:
        return any(r not in tried and r.breaker.available() for r in self.replicas)

    def retry_in_s(self) -> float:
        """How long until an ejected replica may be probed again."""
        return min(r.breaker.retry_in_s() for r in self.replicas)

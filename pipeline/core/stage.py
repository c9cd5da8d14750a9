"""The stage protocol: one async call, state in, partial state out.

A stage holds no timers, spans or budget arithmetic: the runner applies those to every stage.
It declares which fallbacks it can provide; the config picks one and is checked at startup.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ragpacer.pipeline.core.context import RunContext
    from ragpacer.pipeline.core.state import RequestState

Update = dict[str, Any]
# What replaces a stage that cannot run: nothing (skip), its defaults, its cheaper variant,
# or the request fails (fail).
FallbackKind = Literal["skip", "default", "cheaper", "fail"]


class Outcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"
    SKIPPED = "skipped"
    DEGRADED = "degraded"


@dataclass(slots=True)
class Degraded:
    """Returned by a stage that finished but with a lesser result (defaults, partial text)."""

    update: Update
    reason: str


# Not frozen, though never changed: frozen costs ~1 us per object made (hot path).
@dataclass(slots=True)
class StageRecord:
    name: str
    budget_ms: float
    elapsed_ms: float
    outcome: Outcome
    fallback: str | None = None
    detail: str | None = None
    # Time spent inside the stage body; the rest of elapsed_ms is the runner's own overhead.
    body_ms: float = 0.0
    # When the stage started, in ms after the request began (for trace waterfalls).
    offset_ms: float = 0.0

    @property
    def slack_ms(self) -> float:
        return self.budget_ms - self.elapsed_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget_ms": round(self.budget_ms, 3),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "slack_ms": round(self.slack_ms, 3),
            "outcome": self.outcome.value,
            "fallback": self.fallback,
            "detail": self.detail,
        }


@runtime_checkable
class Stage(Protocol):
    name: ClassVar[str]
    # Fallback kinds this stage implements besides "skip" and "fail", which the runner provides.
    fallbacks: ClassVar[frozenset[FallbackKind]]
    # True when the stage honours ctx.cutoff itself and returns partial output at it (the
    # runner then cuts it a little later, as a backstop only, and never skips it for its p95).
    self_limiting: ClassVar[bool]
    # False when skipping the stage because its recent p95 exceeds its budget would cost more
    # than it saves (the cache: see CacheLookup). It is still cut at its budget.
    skip_when_slow: ClassVar[bool]

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded: ...

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        """A cheap, bounded, synchronous replacement for the stage's output."""
        ...

    async def astart(self) -> None:
        """Heavy set-up that must happen in the serving event loop (clients bound to it)."""
        ...


class StageBase:
    """The contract's defaults: not self-limiting, skipped when slow, nothing to start."""

    self_limiting: ClassVar[bool] = False
    skip_when_slow: ClassVar[bool] = True

    async def astart(self) -> None:
        return None

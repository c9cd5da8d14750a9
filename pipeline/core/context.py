"""Run-scoped context: the request's deadline and the process's services, never in the state."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ragpacer.pipeline.core.deadline import Deadline

if TYPE_CHECKING:
    from ragpacer.pipeline.core.settings import Settings


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """The caller's OpenAI sampling parameters. ``max_tokens`` and ``stop`` bound every answer
    (an LLM answer gets the smaller of the caller's and the budget's max_tokens; an answer made
    without the LLM keeps whole sentences within that many words); ``temperature``, ``top_p``
    and ``seed`` go to the LLM (other answers are deterministic)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def sampling(self) -> dict[str, object]:
        """The fields the LLM request carries as they are."""
        out: dict[str, object] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.top_p is not None:
            out["top_p"] = self.top_p
        if self.stop:
            out["stop"] = list(self.stop)
        if self.seed is not None:
            out["seed"] = self.seed
        return out


NO_OPTIONS = AnswerOptions()

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _random_id(bits: int) -> str:
    """A non-zero random id in lowercase hex, as OpenTelemetry's SDK makes them (ids need to
    be unique, not secret; os.urandom is a system call per id)."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


# Not frozen, though never changed: frozen costs ~1 us per object made (hot path).
@dataclass(slots=True)
class TraceContext:
    """A request's place in a W3C trace: the trace, the request's own root span and, when the
    caller sent a ``traceparent``, the caller's span that becomes the root's parent."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 hex digits: the request's root span
    parent_id: str | None = None  # the caller's span
    sampled: bool = True

    @classmethod
    def new(cls) -> TraceContext:
        return cls(_random_id(128), _random_id(64))

    @classmethod
    def continuing(cls, traceparent: str | None) -> TraceContext:
        """The caller's trace when its ``traceparent`` is valid (version 00, ids not all
        zero); otherwise a new trace, as the W3C recommendation says to do."""
        if not traceparent:
            return cls.new()
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if m is None or set(m[1]) == {"0"} or set(m[2]) == {"0"}:
            return cls.new()
        return cls(m[1], _random_id(64), m[2], bool(int(m[3], 16) & 1))

    @property
    def traceparent(self) -> str:
        """The header that makes the request's root span the parent of what comes next."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


# Not frozen, though never changed: frozen costs ~1 us per object made (hot path).
@dataclass(slots=True)
class RunContext:
    deadline: Deadline
    settings: Settings
    # The running stage's own cut-off (set by the runner); stages that stream use it.
    stage_deadline: Deadline | None = None
    trace: TraceContext = field(default_factory=TraceContext.new)
    # Receives generated text as it streams (set by Pipeline.astream).
    on_token: Callable[[str], None] | None = None
    options: AnswerOptions = NO_OPTIONS

    def for_stage(self, stage_deadline: Deadline) -> RunContext:
        # Positional: dataclasses.replace costs ~2 us per stage in its field introspection.
        return RunContext(self.deadline, self.settings, stage_deadline, self.trace,
                          self.on_token, self.options)

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id

    @property
    def cutoff(self) -> Deadline:
        return self.stage_deadline or self.deadline

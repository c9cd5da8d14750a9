"""Run-scoped context: the request's deadline and the process's services, never in the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class RunContext:
    deadline: Deadline
    settings: Settings
    # The running stage's own cut-off (set by the runner); stages that stream use it.
    stage_deadline: Deadline | None = None
    trace_id: str = ""
    # Receives generated text as it streams (set by Pipeline.astream).
    on_token: Callable[[str], None] | None = None
    options: AnswerOptions = NO_OPTIONS

    def for_stage(self, stage_deadline: Deadline) -> RunContext:
        return replace(self, stage_deadline=stage_deadline)

    @property
    def cutoff(self) -> Deadline:
        return self.stage_deadline or self.deadline

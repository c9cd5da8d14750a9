"""Run-scoped context: the request's deadline and the process's services, never in the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ragpacer.pipeline.deadline import Deadline

if TYPE_CHECKING:
    from ragpacer.pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class RunContext:
    deadline: Deadline
    settings: Settings
    # The running stage's own cut-off (set by the runner); stages that stream use it.
    stage_deadline: Deadline | None = None
    trace_id: str = ""
    # Receives generated text as it streams (set by Pipeline.astream).
    on_token: Callable[[str], None] | None = None

    def for_stage(self, stage_deadline: Deadline) -> RunContext:
        return replace(self, stage_deadline=stage_deadline)

    @property
    def cutoff(self) -> Deadline:
        return self.stage_deadline or self.deadline

"""The request core's building blocks: deadline and budgets, the stage contract, the run
context, settings. The SDK, its result and its errors are imported from ``ragpacer``."""

from ragpacer.pipeline.core.budget import LatencyWindow, allot
from ragpacer.pipeline.core.context import AnswerOptions, RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.core.stage import (
    Degraded,
    FallbackKind,
    Outcome,
    Stage,
    StageBase,
    StageRecord,
)

__all__ = [
    "AnswerOptions",
    "Deadline",
    "Degraded",
    "FallbackKind",
    "LatencyWindow",
    "Outcome",
    "RunContext",
    "Stage",
    "StageBase",
    "StageRecord",
    "allot",
    "load_settings",
]

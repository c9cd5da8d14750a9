"""The request core's building blocks: deadline and budgets, the stage contract, the run
context, settings. The SDK, its result and its errors are imported from ``ragpacer``."""

from ragpacer.pipeline.budget import LatencyWindow, allot
from ragpacer.pipeline.context import AnswerOptions, RunContext
from ragpacer.pipeline.deadline import Deadline
from ragpacer.pipeline.settings import load_settings
from ragpacer.pipeline.stage import (
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

"""ragpacer's pipeline: configuration, budgets, the graph, the SDK."""

from ragpacer.pipeline.budget import LatencyWindow, allot
from ragpacer.pipeline.context import RunContext
from ragpacer.pipeline.deadline import Deadline
from ragpacer.pipeline.errors import (
    BlockedInputError,
    ConfigError,
    EmptyQueryError,
    InputError,
    InvalidFiltersError,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    QueryTooLongError,
    RagpacerError,
    StageFailed,
)
from ragpacer.pipeline.result import Result
from ragpacer.pipeline.settings import Settings, load_settings
from ragpacer.pipeline.stage import Degraded, Outcome, Stage, StageRecord


def __getattr__(name: str) -> object:
    # Pipeline pulls in agents and retrieval, which themselves import pipeline.errors:
    # importing it lazily keeps `import retrieval` free of a cycle.
    if name == "Pipeline":
        from ragpacer.pipeline.sdk import Pipeline

        return Pipeline
    raise AttributeError(f"module 'ragpacer.pipeline' has no attribute {name!r}")


__all__ = [
    "BlockedInputError",
    "ConfigError",
    "Deadline",
    "Degraded",
    "EmptyQueryError",
    "InputError",
    "InvalidFiltersError",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "LatencyWindow",
    "Outcome",
    "Pipeline",
    "QueryTooLongError",
    "RagpacerError",
    "Result",
    "RunContext",
    "Settings",
    "Stage",
    "StageFailed",
    "StageRecord",
    "allot",
    "load_settings",
]

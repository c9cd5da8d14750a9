"""ragpacer: chatbot backends that answer every request inside a latency budget, and right.

The public API. The product's folders install beneath this package (``ragpacer.pipeline``,
``ragpacer.agents``, ``ragpacer.retrieval``); this folder holds only the package root.

    from ragpacer import Pipeline

    async with Pipeline.from_config("ragpacer.yaml") as pipeline:
        result = await pipeline.arun("how do I freeze my card?")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ragpacer.pipeline.core.errors import (
    BlockedInputError,
    ConfigError,
    EmptyQueryError,
    InputError,
    InvalidFiltersError,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Overloaded,
    QueryTooLongError,
    RagpacerError,
    SetupError,
    StageFailed,
)
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.result import Result

if TYPE_CHECKING:
    from ragpacer.pipeline.sdk import Pipeline

try:
    __version__ = version("ragpacer")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> object:
    # The SDK brings LangGraph, ONNX Runtime and the stores: loaded when first asked for, so
    # `import ragpacer.retrieval` (or `ragpacer --help`) does not pay for all of it.
    if name == "Pipeline":
        from ragpacer.pipeline.sdk import Pipeline

        return Pipeline
    raise AttributeError(f"module 'ragpacer' has no attribute {name!r}")


__all__ = [
    "BlockedInputError",
    "ConfigError",
    "EmptyQueryError",
    "InputError",
    "InvalidFiltersError",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "Overloaded",
    "Pipeline",
    "QueryTooLongError",
    "RagpacerError",
    "Result",
    "Settings",
    "SetupError",
    "StageFailed",
    "__version__",
]

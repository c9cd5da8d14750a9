"""The exception tree every ragpacer caller can rely on.

    RagpacerError
    ├── ConfigError            a config file or value is invalid (raised at startup)
    ├── InputError             the request itself is unusable (HTTP 400)
    │   ├── EmptyQueryError
    │   ├── QueryTooLongError
    │   ├── InvalidFiltersError
    │   └── BlockedInputError  a guardrail blocked the query
    ├── StageFailed            a stage with no fallback failed (HTTP 503)
    └── LLMError               the LLM server could not be used
        ├── LLMUnavailable     connection refused, DNS, wrong URL, 5xx
        └── LLMTimeout         no first token before the budget ran out

Foreign errors (httpx, pydantic, yaml) are translated at the boundary and chained with ``from``.
"""

from __future__ import annotations


class RagpacerError(Exception):
    """Base class of every error ragpacer raises on purpose."""


class ConfigError(RagpacerError):
    """A configuration file or value is invalid; ``field`` names the offending key."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InputError(RagpacerError, ValueError):
    """The request cannot be processed as given."""

    code = "invalid_request"


class EmptyQueryError(InputError):
    code = "empty_query"


class QueryTooLongError(InputError):
    code = "query_too_long"


class InvalidFiltersError(InputError):
    code = "invalid_filters"


class BlockedInputError(InputError):
    code = "blocked_by_guardrail"


class StageFailed(RagpacerError):
    """A stage failed or ran out of time and is configured with no fallback."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"stage {stage!r} failed with no fallback: {reason}")


class LLMError(RagpacerError):
    """The LLM server could not produce an answer."""


class LLMUnavailable(LLMError):
    pass


class LLMTimeout(LLMError, TimeoutError):
    pass

"""The exception tree every ragpacer caller can rely on.

    RagpacerError
    ├── ConfigError            a config file or value is invalid (raised at startup)
    ├── SetupError             something the operator prepares is missing or unusable
    │   ├── CorpusError        a knowledge-base file or the index
    │   ├── IntentDataError    an intent training file
    │   ├── IntentArtifactError  a trained intent head (missing, corrupt, other embedder)
    │   ├── EmbedderError      the ONNX embedder (run `ragpacer models prepare`)
    │   ├── PrepareError       preparing the LLM engine or its model
    │   └── EngineError        the managed engine could not start or stopped
    ├── InputError             the request itself is unusable (HTTP 400)
    │   ├── EmptyQueryError
    │   ├── QueryTooLongError
    │   ├── InvalidFiltersError
    │   ├── BlockedInputError  a guardrail blocked the query
    │   └── UnsupportedParameterError  an OpenAI parameter ragpacer refuses
    ├── Overloaded             no admission slot in time (HTTP 503 + Retry-After)
    ├── StageFailed            a stage with no fallback failed (HTTP 503)
    ├── ToolArgumentError      a tool call's arguments break its schema (told to the model)
    └── LLMError               the LLM server could not be used
        ├── LLMUnavailable     connection refused, DNS, wrong URL, 5xx
        │   ├── LLMUnreachable   refused or reset: the engine is down
        │   └── LLMBusy          every replica holds max_in_flight calls
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


class SetupError(RagpacerError):
    """Something the operator prepares (a file, a model, the engine) is missing or unusable;
    the message says what to run or fix. Never the caller's fault: not an HTTP 400."""


class CorpusError(SetupError):
    code = "invalid_corpus"


class IntentDataError(SetupError):
    code = "invalid_intent_data"


class IntentArtifactError(SetupError):
    """An intent artifact is missing, corrupt, or was trained for another embedder."""


class EmbedderError(SetupError):
    """The embedding model is missing or unusable; run `ragpacer models prepare`."""


class PrepareError(SetupError):
    """Preparing the engine or the model failed; the message says what to do."""


class EngineError(SetupError):
    """The managed engine could not start or stopped unexpectedly."""


class InputError(RagpacerError, ValueError):
    """The request cannot be processed as given."""

    code = "invalid_request"
    param: str | None = None  # the request field at fault, when one is


class SystemMessageRefused(InputError):
    """The configuration refuses system messages from callers (``llm.caller_system``)."""

    code = "system_message_refused"
    param = "messages"

    def __init__(self) -> None:
        super().__init__("system messages from the caller are not accepted by this server")


class UnsupportedParameterError(InputError):
    """An OpenAI parameter ragpacer does not implement; refused rather than ignored."""

    code = "unsupported_parameter"

    def __init__(self, param: str, why: str) -> None:
        self.param = param
        super().__init__(f"{param} is not supported: {why}")


class EmptyQueryError(InputError):
    code = "empty_query"


class QueryTooLongError(InputError):
    code = "query_too_long"


class InvalidFiltersError(InputError):
    code = "invalid_filters"


class BlockedInputError(InputError):
    code = "blocked_by_guardrail"


class Overloaded(RagpacerError):
    """No admission slot within the request's deadline."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ToolArgumentError(RagpacerError, ValueError):
    """Arguments do not match the tool's schema; the message says which and why."""


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


class LLMUnreachable(LLMUnavailable):
    """The engine could not be reached at all (refused, reset): down, not failing."""


class LLMBusy(LLMUnavailable):
    """Every replica already holds ``max_in_flight`` calls: the answer falls back at once."""


class LLMTimeout(LLMError, TimeoutError):
    pass

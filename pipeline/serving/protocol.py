"""Wire schemas: OpenAI's chat-completion shapes, our extras in a marked block.

The request converts to pipeline arguments in exactly one method, ``to_call``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragpacer.pipeline.core.context import NO_OPTIONS, AnswerOptions
from ragpacer.pipeline.core.errors import InputError, UnsupportedParameterError
from ragpacer.pipeline.result import Result


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content or [] if p.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)  # the customer id
    # Refused with 400 unsupported_parameter rather than ignored (see `refuse_unsupported`).
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    # --- ragpacer extras ------------------------------------------------------------------
    metadata: dict[str, Any] | None = None  # retrieval filters
    deadline_ms: float | None = Field(default=None, gt=0)

    def refuse_unsupported(self) -> None:
        """OpenAI parameters ragpacer does not implement: a 400 naming each, never a silent
        answer that ignores it."""
        if self.n not in (None, 1):
            raise UnsupportedParameterError("n", "one choice per request")
        if self.logprobs or self.top_logprobs:
            raise UnsupportedParameterError("logprobs", "answers are not always sampled")
        fmt = (self.response_format or {}).get("type", "text")
        if fmt != "text":
            raise UnsupportedParameterError("response_format", f"only text, not {fmt!r}")
        if self.tools or self.functions:
            raise UnsupportedParameterError(
                "tools" if self.tools else "functions", "the tools are the routes' own")
        if self.tool_choice not in (None, "none"):
            raise UnsupportedParameterError("tool_choice", "the tools are the routes' own")
        for i, m in enumerate(self.messages):  # an image dropped unread would be answered blind
            if isinstance(m.content, list):
                other = next((p.type for p in m.content if p.type != "text"), None)
                if other is not None:
                    raise UnsupportedParameterError(
                        f"messages[{i}].content", f"a part of type {other!r} (text parts only)")

    def options(self) -> AnswerOptions:
        if (self.stop is self.max_tokens is self.max_completion_tokens is self.temperature
                is self.top_p is self.seed is None):
            return NO_OPTIONS  # the usual request: nothing to build
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise InputError("stop takes at most 4 sequences")
        limits = [t for t in (self.max_tokens, self.max_completion_tokens) if t is not None]
        return AnswerOptions(max_tokens=min(limits) if limits else None,
                             temperature=self.temperature, top_p=self.top_p,
                             stop=tuple(stop), seed=self.seed)

    def to_call(self) -> dict[str, Any]:
        """The pipeline's arguments: the last user message is the query; its history the
        caller's system messages (wherever they are) and the user and assistant turns before
        it; unsupported parameters refused."""
        self.refuse_unsupported()
        last = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=None)
        if last is None:
            raise InputError("messages must contain at least one user message")
        history = [{"role": m.role, "content": m.text()} for m in self.messages
                   if m.role in ("system", "developer")] + [
                   {"role": m.role, "content": m.text()} for m in self.messages[:last]
                   if m.role in ("user", "assistant")]
        return {"query": self.messages[last].text(), "user_id": self.user,
                "filters": self.metadata, "deadline_ms": self.deadline_ms, "history": history,
                "options": self.options()}


def ragpacer_block(result: Result) -> dict[str, Any]:
    """Our extras beside OpenAI's fields: the result without the answer and usage (which have
    their own OpenAI fields), sources by id, title and score."""
    block = result.as_dict(source_texts=False)
    del block["answer"], block["usage"]
    return block


def usage_of(result: Result) -> dict[str, int]:
    u = result.usage or {}
    return {"prompt_tokens": u.get("prompt_tokens", 0),
            "completion_tokens": u.get("completion_tokens", 0),
            "total_tokens": u.get("total_tokens", 0)}


def finish_reason(result: Result) -> str:
    return "length" if result.truncated or result.finish_reason == "length" else "stop"


def completion_body(result: Result, model: str) -> dict[str, Any]:
    return {
        "id": completion_id(result.trace_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": finish_reason(result)}],
        "usage": usage_of(result),
        "ragpacer": ragpacer_block(result),
    }


def chunk_body(cid: str, model: str, delta: dict[str, Any], finish: str | None = None,
               **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra}


def closing_chunks(cid: str, model: str, result: Result, queued_ms: float | None,
                   include_usage: bool) -> list[dict[str, Any]]:
    """What follows the text of a stream: the finish reason; our block (with the Server-Timing
    figures a stream cannot send as a header) in a chunk of its own; and, when the caller asked
    with ``stream_options.include_usage``, OpenAI's usage chunk, last and with no choices."""
    out = [chunk_body(cid, model, {}, finish_reason(result))]
    block = {**ragpacer_block(result), "server_timing": server_timing(result, queued_ms)}
    out.append({**chunk_body(cid, model, {}), "choices": [], "ragpacer": block})
    if include_usage:
        out.append({**chunk_body(cid, model, {}), "choices": [], "usage": usage_of(result)})
    return out


def completion_id(trace_id: str) -> str:
    """One id per request, known before the first byte: a stream's every chunk carries it."""
    return f"chatcmpl-{trace_id[:24]}"


def server_timing(result: Result, queued_ms: float | None = None) -> str:
    """Every stage's duration, as browsers and proxies read them; ``queue`` is the wait for
    an admission slot, which ``total`` (the pipeline's own time) does not include."""
    parts = [f"{r.name};dur={r.elapsed_ms:.2f};desc=\"{r.outcome.value}\"" for r in result.stages]
    if queued_ms is not None:
        parts.append(f"queue;dur={queued_ms:.2f}")
    parts.append(f"total;dur={result.elapsed_ms:.2f}")
    return ", ".join(parts)

"""``POST /v1/chat/completions``: the endpoint, and the shortcut that serves it outside
FastAPI's middleware stack and router.

The endpoint reads and validates its own body (pydantic-core straight from the bytes), so it
runs the same under FastAPI's router (where the route is declared, for the OpenAPI schema) and
under ``HotPath``, which hands it every POST to its path before FastAPI's six middleware
layers and dependency resolution: on a cache hit those were most of the server's time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from ragpacer.pipeline.result import Result
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import errors
from ragpacer.pipeline.serving.admission import Admission, Slot
from ragpacer.pipeline.serving.errors import APIError, to_api_error
from ragpacer.pipeline.serving.index_follow import Current
from ragpacer.pipeline.serving.limits import BodyTooLarge
from ragpacer.pipeline.serving.protocol import (
    ChatCompletionRequest,
    chunk_body,
    closing_chunks,
    completion_body,
    completion_id,
    server_timing,
)

PATH = "/v1/chat/completions"
ARRIVED = "ragpacer.arrived"  # scope keys set by serving.app.RequestContext
TRACE = "ragpacer.trace"

Caller = Callable[[Request], Awaitable[str]]


class ChatCompletions:
    """The endpoint, as a plain handler (``endpoint``) and as an ASGI app (``__call__``)."""

    def __init__(self, current: Current, caller: Caller, admission: Admission,
                 keyed: bool) -> None:
        self.current = current  # the pipeline now: a new index swaps it (index_follow)
        self.caller = caller  # who is asking: the key id when ``keyed``
        self.admission = admission
        self.keyed = keyed
        self.model = current.pipeline.settings.server.model_name

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def endpoint(self, request: Request) -> Response:
        """Every outcome is a response: an answer, a stream, or an OpenAI-style error."""
        try:
            return await self._answer(request)
        except BodyTooLarge:
            raise  # serving.limits.BodySizeLimit answers 413
        except Exception as exc:
            return errors.response_for(exc)

    async def _answer(self, request: Request) -> Response:
        who = await self.caller(request)  # 401 / 429 before the body is read
        body = ChatCompletionRequest.model_validate_json(await _read_body(request))
        if body.model != self.model:
            raise APIError(404, f"model {body.model!r} does not exist; use {self.model!r}",
                           code="model_not_found", param="model")
        if not body.messages:
            raise APIError(400, "messages must not be empty", param="messages",
                           code="invalid_value")
        call = body.to_call()
        if self.keyed:
            call["tenant"] = who  # the key id: cached answers never cross keys
        call["traceparent"] = request.scope[TRACE]
        pipeline = self.current.pipeline  # this request finishes on it, whatever is swapped in
        # The deadline runs from the request's arrival: time spent reading and validating it
        # on a busy event loop is the caller's time too.
        deadline, _, _ = pipeline.check_input(call["query"], call["filters"],
                                              call["deadline_ms"], request.scope.get(ARRIVED))
        # Admission before the response starts: an overloaded server answers 503 with
        # Retry-After, for a stream too, before any byte of a body.
        slot = await self.admission.enter(deadline, call.get("tenant"))
        # Time spent waiting for the slot counts against the request's deadline.
        call["deadline_ms"] = max(deadline.remaining_ms(), 1.0)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(pipeline, call, self.model, slot, include_usage),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                background=BackgroundTask(_release, slot))  # also when the body never started
        try:
            result = await pipeline.arun(call.pop("query"), **call)
        finally:
            slot.release()
        # orjson: a fifth of the stdlib encoder's time on this body.
        return Response(orjson.dumps(completion_body(result, self.model),
                                     option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json",
                        headers={"Server-Timing": server_timing(result, slot.queued_ms)})


class HotPath:
    """Pure ASGI: POST to the chat path goes straight to ``chat``; the rest to ``app``."""

    def __init__(self, app: Any, chat: ChatCompletions) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.chat(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def request_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI request body of the endpoint and the component schemas it refers to
    (FastAPI documents a body only when it parses it itself)."""
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = {**schema.pop("$defs", {}), "ChatCompletionRequest": schema}
    body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}
    return body, components


async def _read_body(request: Request) -> bytes:
    """The body straight from ASGI's receive: ``Request.body`` goes through an async
    generator, a few µs per request on the hot path."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _release(slot: Slot) -> None:
    """As a response's background task: async, or Starlette would run it in a thread."""
    slot.release()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(pipeline: Pipeline, call: dict[str, Any], model: str, slot: Slot,
                  include_usage: bool) -> AsyncIterator[str]:
    """Chunks as generated, all with one id; then the closing chunks (``closing_chunks``).
    An error after the first byte is an OpenAI-style error event, then ``[DONE]``."""
    cid = completion_id(call["traceparent"].trace_id)
    usage: dict[str, Any] = {"usage": None} if include_usage else {}
    query = call.pop("query")
    first = True
    try:
        async for item in pipeline.astream(query, **call):
            if isinstance(item, Result):
                for chunk in closing_chunks(cid, model, item, slot.queued_ms, include_usage):
                    yield _sse(chunk)
                break
            delta = {"role": "assistant", "content": item} if first else {"content": item}
            first = False
            yield _sse(chunk_body(cid, model, delta, **usage))
    except asyncio.CancelledError:
        raise  # the client went away: astream's finally cancels the pipeline's work
    except Exception as exc:
        err = to_api_error(exc)
        yield _sse(errors.error_body(err.message, err.type, err.code, err.param))
    finally:
        slot.release()
    yield "data: [DONE]\n\n"


__all__ = ["PATH", "ChatCompletions", "HotPath", "request_schema"]

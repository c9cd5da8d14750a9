"""The FastAPI application: thin handlers over the Pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import httpx
import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from ragpacer.pipeline.cache.response import redis_persistence
from ragpacer.pipeline.core.context import TraceContext
from ragpacer.pipeline.core.errors import RagpacerError
from ragpacer.pipeline.result import Result
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import errors
from ragpacer.pipeline.serving.admission import Admission
from ragpacer.pipeline.serving.auth import KeyStore, RedisTokenBucket, TokenBucket, retry_after
from ragpacer.pipeline.serving.errors import APIError, to_api_error
from ragpacer.pipeline.serving.limits import BodySizeLimit
from ragpacer.pipeline.serving.protocol import (
    ChatCompletionRequest,
    chunk_body,
    closing_chunks,
    completion_body,
    completion_id,
    server_timing,
)


def create_app(pipeline: Pipeline, *, manage_lifecycle: bool = True) -> Any:
    settings = pipeline.settings
    model_name = settings.server.model_name
    keys = KeyStore(settings.server.api_keys)
    admission = Admission(settings.server.max_concurrency, settings.server.max_queue)
    limiter: TokenBucket | None = None
    if settings.server.rate_limit_per_s > 0:
        rate, burst = settings.server.rate_limit_per_s, settings.server.rate_limit_burst
        limiter = (RedisTokenBucket(settings.redis_url, rate, burst) if settings.redis_url
                   else TokenBucket(rate, burst))

    async def caller(request: Request) -> str:
        """Authenticate, then charge the caller's rate limit (401 / 429 otherwise)."""
        who = (keys.identify(request.headers.get("authorization")) if keys.enabled
               else (request.client.host if request.client else "anonymous"))
        if limiter is not None:
            wait = await limiter.take(who)
            if wait > 0:
                raise APIError(429, "rate limit exceeded", type="rate_limit_exceeded",
                               code="rate_limit_exceeded",
                               headers={"Retry-After": retry_after(wait)})
        return who

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await pipeline.astart()
        yield
        if manage_lifecycle:
            await pipeline.aclose()

    app = FastAPI(title="ragpacer", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    # Our own errors (bad input, overload, a failed stage) get handlers of their own: left to
    # the catch-all `Exception` handler, Starlette would answer and then re-raise them, and
    # uvicorn would log every 503 as a crash with a traceback.
    for exc_type in (Exception, RequestValidationError, HTTPException, APIError, RagpacerError):
        app.add_exception_handler(exc_type, errors.handle)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatCompletionRequest,
                               who: str = Depends(caller)) -> Any:
        if body.model != model_name:
            raise APIError(404, f"model {body.model!r} does not exist; use {model_name!r}",
                           code="model_not_found", param="model")
        if not body.messages:
            raise APIError(400, "messages must not be empty", param="messages",
                           code="invalid_value")
        call = body.to_call()
        if keys.enabled:
            call["tenant"] = who  # the key id: cached answers never cross keys
        call["traceparent"] = request.scope[TRACE]
        pipeline.check_input(call["query"], call["filters"], call["deadline_ms"])
        # The deadline runs from the request's arrival: time spent reading and validating it
        # on a busy event loop is the caller's time too.
        deadline = pipeline._deadline(call["deadline_ms"], request.scope.get(ARRIVED))
        # Admission before the response starts: an overloaded server answers 503 with
        # Retry-After, for a stream too, before any byte of a body.
        stack = AsyncExitStack()
        queued_ms = await stack.enter_async_context(admission.slot(deadline, call.get("tenant")))
        # Time spent waiting for the slot counts against the request's deadline.
        call["deadline_ms"] = max(deadline.remaining_ms(), 1.0)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            release = _once(stack.aclose)
            return StreamingResponse(
                _stream(pipeline, call, model_name, queued_ms, include_usage, release),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                background=BackgroundTask(release))  # also when the body never started
        async with stack:
            result = await pipeline.arun(call.pop("query"), **call)
        # orjson: a fifth of the stdlib encoder's time on this body.
        return Response(orjson.dumps(completion_body(result, model_name),
                                     option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json",
                        headers={"Server-Timing": server_timing(result, queued_ms)})

    @app.get("/v1/models", dependencies=[Depends(caller)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": 0, "owned_by": "ragpacer"}]}

    @app.get("/metrics", dependencies=[Depends(caller)])
    async def metrics() -> Response:
        # Behind the API keys when they are set; the server binds to loopback by default.
        return Response(pipeline.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"index": "ok" if len(pipeline.index) else "empty",
                  "llm": await _llm_check(pipeline) if pipeline.uses_llm else "unused"}
        if settings.redis_url:
            checks["redis"] = await _redis_check(settings.redis_url)
        ready = checks["index"] == "ok"
        healthy = all(v in ("ok", "unused") for k, v in checks.items() if k != "index")
        status = "ok" if ready and healthy else ("degraded" if ready else "down")
        body: dict[str, Any] = {"status": status, "checks": checks}
        if settings.redis_url:  # whether cached answers survive a Redis restart
            body["cache_persistence"] = await redis_persistence(settings.redis_url)
        return JSONResponse(body, status_code=200 if ready else 503)

    worker = str(os.getpid()) if settings.server.workers > 1 else None
    return RequestContext(BodySizeLimit(app, settings.server.max_body_bytes), worker)


ARRIVED = "ragpacer.arrived"
TRACE = "ragpacer.trace"
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable, no spaces, bounded


class RequestContext:
    """Pure ASGI: notes when a request arrived (``time.monotonic()``) and its W3C trace
    context (the caller's ``traceparent`` continued, or a new trace), and puts ``traceparent``
    (the request's root span) and ``x-request-id`` (the caller's, else the trace id) on every
    response, errors included; with ``worker``, which server process answered too."""

    def __init__(self, app: Any, worker: str | None = None) -> None:
        self.app = app
        self.worker = worker

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVED] = time.monotonic()
        headers = dict(scope.get("headers") or [])
        trace = scope[TRACE] = TraceContext.continuing(
            headers.get(b"traceparent", b"").decode("latin-1"))
        asked = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = asked if _REQUEST_ID.match(asked) else trace.trace_id
        extra = [(b"traceparent", trace.traceparent.encode()),
                 (b"x-request-id", request_id.encode())]
        if self.worker is not None:
            extra.append((b"x-ragpacer-worker", self.worker.encode()))

        async def send_with_ids(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_ids)


def _once(close: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """An idempotent release: the stream's end and the response's background task both call
    it, whichever comes (a stream the client left before it started has only the second)."""
    done = False

    async def release() -> None:
        nonlocal done
        if not done:
            done = True
            await close()

    return release


async def _llm_check(pipeline: Pipeline) -> str:
    if pipeline.engines is not None and (status := pipeline.engines.status()) != "ok":
        return status  # an engine restarting, or given up, and why
    model = pipeline.settings.llm.model("default")
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            r = await client.get(model.url.rstrip("/") + "/models")
        return "ok" if r.status_code == 200 else f"http {r.status_code}"
    except httpx.HTTPError as exc:
        return f"down ({type(exc).__name__})"


async def _redis_check(url: str) -> str:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        # redis-py types ping() for its sync and async clients at once.
        return "ok" if await cast(Awaitable[bool], client.ping()) else "no answer"
    except Exception as exc:  # readiness reports, it never raises
        return f"down ({type(exc).__name__})"
    finally:
        await client.aclose()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(pipeline: Pipeline, call: dict[str, Any], model: str,
                  queued_ms: float, include_usage: bool,
                  release: Callable[[], Awaitable[None]]) -> AsyncIterator[str]:
    """Chunks as generated, all with one id; then the closing chunks (``closing_chunks``).
    An error after the first byte is an OpenAI-style error event, then ``[DONE]``."""
    cid = completion_id(call["traceparent"].trace_id)
    usage: dict[str, Any] = {"usage": None} if include_usage else {}
    query = call.pop("query")
    first = True
    try:
        async for item in pipeline.astream(query, **call):
            if isinstance(item, Result):
                for chunk in closing_chunks(cid, model, item, queued_ms, include_usage):
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
        await release()
    yield "data: [DONE]\n\n"

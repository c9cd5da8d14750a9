"""The FastAPI application: thin handlers over the Pipeline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from ragpacer.pipeline.cache.response import redis_persistence
from ragpacer.pipeline.core.errors import RagpacerError
from ragpacer.pipeline.result import Result
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import errors
from ragpacer.pipeline.serving.admission import Admission, Overloaded
from ragpacer.pipeline.serving.auth import KeyStore, RedisTokenBucket, TokenBucket, retry_after
from ragpacer.pipeline.serving.errors import APIError, to_api_error
from ragpacer.pipeline.serving.limits import BodySizeLimit
from ragpacer.pipeline.serving.protocol import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    finish_reason,
    ragpacer_block,
    server_timing,
    usage_of,
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
        pipeline.check_input(call["query"], call["filters"], call["deadline_ms"])
        # The deadline runs from the request's arrival: time spent reading and validating it
        # on a busy event loop is the caller's time too.
        deadline = pipeline._deadline(call["deadline_ms"], request.scope.get(ARRIVED))
        if body.stream:
            return StreamingResponse(_admitted_stream(admission, deadline, pipeline, call,
                                                      model_name, call.get("tenant")),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        async with admission.slot(deadline, call.get("tenant")) as queued_ms:
            # Time spent waiting for the slot counts against the request's deadline.
            call["deadline_ms"] = max(deadline.remaining_ms(), 1.0)
            result = await pipeline.arun(call.pop("query"), **call)
        return JSONResponse(completion_body(result, model_name),
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

    return StampArrival(BodySizeLimit(app, settings.server.max_body_bytes))


ARRIVED = "ragpacer.arrived"


class StampArrival:
    """Notes in the ASGI scope when a request reached the app (``time.monotonic()``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


async def _llm_check(pipeline: Pipeline) -> str:
    model = pipeline.settings.llm.model("default")
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            r = await client.get(model.url.rstrip("/") + "/models")
        return "ok" if r.status_code == 200 else f"http {r.status_code}"
    except httpx.HTTPError as exc:
        return f"down ({type(exc).__name__})"


async def _admitted_stream(admission: Admission, deadline: Any, pipeline: Pipeline,
                           call: dict[str, Any], model: str,
                           tenant: str | None) -> AsyncIterator[str]:
    try:
        async with admission.slot(deadline, tenant):
            call["deadline_ms"] = max(deadline.remaining_ms(), 1.0)
            async for chunk in _stream(pipeline, call, model):
                yield chunk
    except Overloaded as exc:
        err = to_api_error(exc)
        yield _sse(errors.error_body(err.message, err.type, err.code, err.param))
        yield "data: [DONE]\n\n"


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


async def _stream(pipeline: Pipeline, call: dict[str, Any], model: str) -> AsyncIterator[str]:
    """Chunks as generated; timings and usage in the last chunk; errors in-band once started."""
    cid = "chatcmpl-stream"
    query = call.pop("query")
    first = True
    try:
        async for item in pipeline.astream(query, **call):
            if isinstance(item, Result):
                cid = f"chatcmpl-{item.trace_id[:24]}"
                yield _sse(chunk_body(cid, model, {}, finish_reason(item), usage=usage_of(item),
                                      ragpacer=ragpacer_block(item)))
                break
            delta = {"role": "assistant", "content": item} if first else {"content": item}
            first = False
            yield _sse(chunk_body(cid, model, delta))
    except asyncio.CancelledError:
        raise  # the client went away: astream's finally cancels the pipeline's work
    except Exception as exc:
        err = to_api_error(exc)
        yield _sse(errors.error_body(err.message, err.type, err.code, err.param))
    yield "data: [DONE]\n\n"

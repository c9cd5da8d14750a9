"""The FastAPI application: thin handlers over the Pipeline."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from ragpacer.pipeline.assembly import index_root
from ragpacer.pipeline.cache.response import redis_persistence
from ragpacer.pipeline.core.context import TraceContext
from ragpacer.pipeline.core.errors import RagpacerError
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import errors
from ragpacer.pipeline.serving.admission import Admission
from ragpacer.pipeline.serving.auth import KeyStore, RedisTokenBucket, TokenBucket, retry_after
from ragpacer.pipeline.serving.chat import (
    ARRIVED,
    PATH,
    TRACE,
    ChatCompletions,
    HotPath,
    request_schema,
)
from ragpacer.pipeline.serving.errors import APIError
from ragpacer.pipeline.serving.index_follow import Current, IndexFollower
from ragpacer.pipeline.serving.limits import BodySizeLimit


def create_app(pipeline: Pipeline, *, manage_lifecycle: bool = True,
               rebuild: Callable[[], Pipeline] | None = None) -> Any:
    """``rebuild``: how to make this process's pipeline again; given, the app follows
    `ragpacer ingest` (``serving.index_follow``) every ``server.index_poll_s``."""
    settings = pipeline.settings
    current = Current(pipeline)
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
        if isinstance(limiter, RedisTokenBucket):
            await limiter.connect()
        follower, follow = None, None
        if rebuild is not None and settings.server.index_poll_s > 0:
            follower = IndexFollower(current, rebuild, index_root(settings),
                                     settings.server.index_poll_s)
            follow = asyncio.get_running_loop().create_task(follower.run())
        yield
        if follower is not None and follow is not None:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await follower.aclose()
        if manage_lifecycle:
            await current.pipeline.aclose()

    app = FastAPI(title="ragpacer", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    # Our own errors (bad input, overload, a failed stage) get handlers of their own: left to
    # the catch-all `Exception` handler, Starlette would answer and then re-raise them, and
    # uvicorn would log every 503 as a crash with a traceback.
    for exc_type in (Exception, RequestValidationError, HTTPException, APIError, RagpacerError):
        app.add_exception_handler(exc_type, errors.handle)

    chat = ChatCompletions(current, caller, admission, keyed=keys.enabled)
    request_body, components = request_schema()
    app.add_api_route(PATH, chat.endpoint, methods=["POST"], response_model=None,
                      openapi_extra={"requestBody": request_body})
    _document_components(app, components)

    @app.get("/v1/models", dependencies=[Depends(caller)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": 0, "owned_by": "ragpacer"}]}

    @app.get("/metrics", dependencies=[Depends(caller)])
    async def metrics() -> Response:
        # Behind the API keys when they are set; the server binds to loopback by default.
        return Response(current.pipeline.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        serving = current.pipeline
        checks = {"index": "ok" if len(serving.index) else "empty",
                  "llm": await _llm_check(serving) if serving.uses_llm else "unused"}
        if settings.redis_url:
            checks["redis"] = await _redis_check(settings.redis_url)
        ready = checks["index"] == "ok"
        healthy = all(v in ("ok", "unused") for k, v in checks.items() if k != "index")
        status = "ok" if ready and healthy else ("degraded" if ready else "down")
        body: dict[str, Any] = {"status": status, "checks": checks,
                                "index": serving.index_id}
        if settings.redis_url:  # whether cached answers survive a Redis restart
            body["cache_persistence"] = await redis_persistence(settings.redis_url)
        return JSONResponse(body, status_code=200 if ready else 503)

    worker = str(os.getpid()) if settings.server.workers > 1 else None
    return RequestContext(BodySizeLimit(HotPath(app, chat), settings.server.max_body_bytes),
                          worker)


def _document_components(app: FastAPI, components: dict[str, Any]) -> None:
    """Add the schemas the chat endpoint's documented body refers to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
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

"""The uvicorn settings `ragpacer serve` runs the app with (and the tests serve it with)."""

from __future__ import annotations

from typing import Any

import uvicorn

from ragpacer.pipeline.core.settings import Settings


def uvicorn_config(app: Any, settings: Settings, *, host: str | None = None,
                   port: int | None = None, **extra: Any) -> uvicorn.Config:
    # Idle keep-alive connections stay open longer than clients keep them in their pools
    # (httpx and the OpenAI SDK: 5 s, uvicorn's own default too): with equal timeouts a
    # client now and then sends on a connection the server is closing and gets a reset.
    # No `server: uvicorn` header: a response need not name the software behind it.
    return uvicorn.Config(app, host=host or settings.server.host,
                          port=port or settings.server.port, log_level="warning",
                          timeout_keep_alive=settings.server.keep_alive_s,
                          server_header=False, **extra)

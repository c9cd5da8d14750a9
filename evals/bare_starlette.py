"""The bench's baseline server: a bare Starlette handler answering a fixed chat-completion
body, under the same uvicorn settings `ragpacer serve` uses. What no framework can go below.

    python -m evals.bare_starlette PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.serving.server import uvicorn_config

BODY = (b'{"id":"chatcmpl-0","object":"chat.completion","created":0,"model":"ragpacer",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"Freeze it in the '
        b'app under Cards > Freeze. [1]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":'
        b'0,"completion_tokens":0,"total_tokens":0},"ragpacer":{"cached":true,"elapsed_ms":0}}')


async def completions(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                        Route("/healthz", lambda r: Response(b"{}"), methods=["GET"])])

if __name__ == "__main__":
    settings = load_settings(environ={})
    uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1",
                                  port=int(sys.argv[1]))).run()

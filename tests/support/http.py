"""The real app under uvicorn on a loopback port, and what uvicorn logs meanwhile."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import create_app
from ragpacer.pipeline.serving.server import uvicorn_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(pipeline: Pipeline) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread."""
    port = free_port()
    srv = uvicorn.Server(uvicorn_config(create_app(pipeline), pipeline.settings,
                                        host="127.0.0.1", port=port))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@contextlib.contextmanager
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs at ERROR (an exception escaping the app) while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)

"""Several server processes on one port: ``ragpacer serve --workers N``.

uvicorn's supervisor runs the workers on one listening socket and replaces one that dies.
The parent starts the managed LLM engines once and keeps them supervised; each worker builds
its own pipeline against them (as an external engine), searches its own read-only copy of
the current Qdrant Edge index (the shard's lock admits one process), and shares the response
cache, the rate limits and request-time data through Redis (``redis_url``; without it each
worker keeps its own). A re-ingest reaches every worker within ``server.index_poll_s``
(``serving.index_follow``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.supervisors import Multiprocess

from ragpacer.pipeline.core.settings import Settings, load_settings
from ragpacer.pipeline.llm.manager import EngineFleet, managed_engines
from ragpacer.pipeline.loop_thread import LoopThread
from ragpacer.pipeline.resources import Resources
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving.app import create_app
from ragpacer.pipeline.serving.server import uvicorn_config

FACTORY = "ragpacer.pipeline.serving.workers:worker_app"


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls it in each worker); it follows a
    re-ingest by building its pipeline again on a copy of the new index."""
    # Its lifespan starts and closes the pipeline, and the ones a new index brings.
    return create_app(worker_pipeline(), rebuild=worker_pipeline)


def worker_pipeline() -> Pipeline:
    """A pipeline searching a copy of the current index of its own."""
    snapshots = Path(tempfile.mkdtemp(prefix=f"ragpacer-worker-{os.getpid()}-"))
    return Pipeline(load_settings(), resources=Resources(snapshots), close_resources=True)


def serve_workers(settings: Settings, config: Path | None, host: str, port: int, workers: int,
                  say: Callable[[str], None]) -> None:
    # Built once here before the workers start: a bad config fails now, and the files a
    # first start writes (the sentence vectors) are written once, not raced by the workers.
    Pipeline(settings).close()
    portal, fleet = None, None
    if settings.llm.engine == "managed" and settings.uses_llm:
        portal = LoopThread("ragpacer-engines")  # the supervisors' loop, for the parent's life
        fleet = EngineFleet(managed_engines(settings, say))
        portal.call(fleet.start(say))
    # The workers read the same file and environment, and use the engines started above.
    os.environ["RAGPACER_LLM__ENGINE"] = "external"
    if config is not None:
        os.environ["RAGPACER_CONFIG"] = str(Path(config).resolve())
    cfg = uvicorn_config(FACTORY, settings, host=host, port=port, factory=True,
                         workers=workers)
    say(f"serving http://{host}:{port}/v1 with {workers} workers "
        f"(model {settings.server.model_name!r})")
    try:
        Multiprocess(cfg, sockets=[cfg.bind_socket()]).run()
    finally:
        if portal is not None and fleet is not None:
            portal.call(fleet.stop())
            portal.stop()

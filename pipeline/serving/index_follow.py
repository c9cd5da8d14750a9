"""A worker follows `ragpacer ingest`: a new index is served without a restart.

Each worker searches its own copy of the Qdrant Edge index. When an ingest switches
``{home}/index/current`` to a new shard, the worker builds a whole new pipeline on a copy of
it (in a thread: the event loop keeps answering), starts it, and swaps it in. Requests already
running finish on the old pipeline, which is closed once no request can still be on it (the
longest deadline a request may ask for); the old copy is removed with it. The cache version
changes with the index, so no answer cached under the old one is served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ragpacer.pipeline.sdk import Pipeline
from ragpacer.retrieval.ingest import current_index

log = logging.getLogger("ragpacer.http")


class Current:
    """The pipeline a server answers with now; the index follower replaces it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline


class IndexFollower:
    def __init__(self, current: Current, build: Callable[[], Pipeline], index_root: Path,
                 poll_s: float) -> None:
        self.current = current
        self.build = build
        self.index_root = index_root
        self.poll_s = poll_s
        self.serving = current_index(index_root)
        self._retiring: set[asyncio.Task[None]] = set()  # old pipelines finishing requests

    async def run(self) -> None:
        """Poll until cancelled; a failed build keeps the old pipeline serving."""
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()

    async def check(self) -> bool:
        """Swap in a pipeline on the current index if it changed; True when it did."""
        now = current_index(self.index_root)
        if now is None or now == self.serving:
            return False
        self.serving = now  # tried once: a broken index is not rebuilt every poll
        try:
            new = await asyncio.to_thread(self.build)
            try:
                await new.astart()
            except Exception:
                await new.aclose()
                raise
        except Exception as exc:  # the old pipeline keeps answering
            log.warning("index %s not taken up: %s: %s", now.name, type(exc).__name__, exc)
            return False
        old, self.current.pipeline = self.current.pipeline, new
        log.info("serving index %s", now.name)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return True

    @staticmethod
    async def _retire(old: Pipeline) -> None:
        try:
            # Every request that started on it ends by its deadline, at the latest this one.
            await asyncio.sleep(old.settings.max_deadline_ms / 1000.0 + 1.0)
        finally:  # at shutdown too, when the wait is cancelled
            await old.aclose()

    async def aclose(self) -> None:
        """At shutdown: close the pipelines still waiting out their last requests."""
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

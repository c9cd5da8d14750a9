"""Dynamic micro-batching of query embeddings under concurrency.

Requests arriving within a small window are embedded as one batch in a single worker thread
(onnxruntime releases the GIL, so the event loop keeps accepting the next batch meanwhile).
A lone request waits at most the window; a request whose deadline is nearer than the window
flushes the batch at once; each caller gets its own row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ragpacer.pipeline.core.deadline import Deadline


class MicroBatcher:
    def __init__(
        self,
        embed_batch: Callable[[Sequence[str]], np.ndarray],
        *,
        window_ms: float = 2.0,
        max_batch: int = 32,
    ) -> None:
        if window_ms < 0 or max_batch < 1:
            raise ValueError("window_ms must be >= 0 and max_batch >= 1")
        self.embed_batch = embed_batch
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragpacer-embed")
        self.batches: list[int] = []  # sizes of recent batches, for tests and metrics

    async def embed(self, text: str, deadline: Deadline | None = None) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((text, fut))
        urgent = deadline is not None and deadline.remaining_ms() / 1000.0 < 2 * self.window_s
        if len(self._pending) >= self.max_batch or urgent or self.window_s == 0:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches.append(len(batch))
        del self.batches[:-1000]
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pool, self.embed_batch, [t for t, _ in batch])
        work.add_done_callback(lambda done: self._deliver(batch, done))

    @staticmethod
    def _deliver(batch: list[tuple[str, asyncio.Future[np.ndarray]]],
                 done: asyncio.Future[np.ndarray]) -> None:
        exc = done.exception()
        for i, (_, fut) in enumerate(batch):
            if fut.done():  # the caller was cancelled (deadline, disconnect)
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(done.result()[i])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Keeps the managed engine running: an exit is noticed within a poll interval (the process,
not a failed request), the old process group is cleared (its workers and multiprocessing's
resource tracker included), and the engine is started again with exponential backoff. After
``max_attempts`` failed starts in a row it gives up and says why; requests meanwhile degrade
to the extractive answer as they do whenever the LLM is unreachable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from ragpacer.pipeline.core.errors import EngineError
from ragpacer.pipeline.llm.engine import ManagedEngine

log = logging.getLogger("ragpacer.engine")
State = Literal["up", "restarting", "failed"]


class EngineSupervisor:
    def __init__(
        self,
        engine: ManagedEngine,
        *,
        poll_s: float = 0.25,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_attempts: int = 5,
        on_restart: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self.on_restart = on_restart  # called with the seconds the engine was down
        self.state: State = "up"
        self.reason = ""
        self.restarts = 0
        self.attempt = 0
        self.down_since: float | None = None

    def status(self) -> str:
        """For readiness: "ok", or what is wrong and since when."""
        if self.state == "up":
            return "ok"
        down = time.monotonic() - (self.down_since or time.monotonic())
        if self.state == "restarting":
            return f"restarting (attempt {self.attempt}, down {down:.0f} s): {self.reason}"
        return f"failed: {self.reason}"

    async def run(self) -> None:
        """Watch until cancelled, or until the restarts are given up."""
        while self.state != "failed":
            await asyncio.sleep(self.poll_s)
            proc = self.engine.proc
            if proc is not None and proc.poll() is not None:
                await self._recover(f"{self.engine.cfg.kind} exited with code {proc.returncode}")

    async def _recover(self, why: str) -> None:
        self.state, self.reason, self.down_since = "restarting", why, time.monotonic()
        log.warning("%s; restarting it", why)
        await asyncio.to_thread(self.engine.stop)  # the rest of the old process group
        for attempt in range(1, self.max_attempts + 1):
            self.attempt = attempt
            await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
            try:
                self.engine.start()  # from the loop's thread: the parent-death signal follows it
                seconds = await asyncio.to_thread(self.engine.wait_healthy)
            except EngineError as exc:
                self.reason = f"{why}; start {attempt} failed: {str(exc).splitlines()[0]}"
                log.warning("%s", self.reason)
                await asyncio.to_thread(self.engine.stop)
                continue
            down = time.monotonic() - self.down_since
            self.state, self.reason, self.down_since = "up", "", None
            self.restarts += 1
            log.warning("%s healthy again after %.1f s (%.1f s to start)",
                        self.engine.cfg.kind, down, seconds)
            if self.on_restart is not None:
                self.on_restart(down)
            return
        self.state = "failed"
        self.reason = f"gave up after {self.max_attempts} starts: {self.reason}"
        log.error("%s", self.reason)

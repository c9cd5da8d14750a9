"""Small stages for tests of the runner and graph (real stages, controlled bodies)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update


class Probe(StageBase):
    """A stage that sleeps, raises or returns as told, and records when it ran."""

    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"default", "cheaper"})

    def __init__(self, name: str, *, delay_s: float = 0.0, fail: bool = False,
                 output: Update | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.delay_s = delay_s
        self.fail = fail
        self.output = output if output is not None else {}
        self.calls = 0
        self.fallback_calls = 0
        self.spans: list[tuple[float, float]] = []

    async def __call__(self, state: Any, ctx: Any) -> Update:
        self.calls += 1
        start = time.monotonic()
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError(f"{self.name} exploded")
            return dict(self.output)
        finally:
            self.spans.append((start, time.monotonic()))

    def fallback(self, kind: FallbackKind, state: Any, ctx: Any) -> Update:
        self.fallback_calls += 1
        return {f"{self.name}_fallback": kind} if self.name not in ("features",) else {
            "features": {"tier": "standard"}}

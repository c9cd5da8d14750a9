"""A tool that sleeps, fails or answers as told."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar


class Sleepy:
    name: ClassVar[str] = "sleepy"
    description: ClassVar[str] = "sleeps"
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, name: str, delay_s: float, timeout_s: float = 5.0, fail: bool = False):
        self.name = name  # type: ignore[misc]
        self.delay_s, self.timeout_s, self.fail = delay_s, timeout_s, fail

    async def __call__(self, args: dict[str, Any]) -> str:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("tool exploded")
        return self.name

    def arguments_from(self, state: Any) -> dict[str, Any]:
        return {}


class Rendezvous(Sleepy):
    """Answers only once every tool sharing its barrier has started: run one after another,
    the first waits for the others until its timeout."""

    def __init__(self, name: str, barrier: asyncio.Barrier, timeout_s: float = 5.0):
        super().__init__(name, 0.0, timeout_s)
        self.barrier = barrier

    async def __call__(self, args: dict[str, Any]) -> str:
        await self.barrier.wait()
        return self.name

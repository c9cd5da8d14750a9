"""Runs tools concurrently, each under min(its timeout, the time left); stragglers cancelled."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragpacer.agents.tools import Tool, ToolArgumentError, validate_arguments
from ragpacer.pipeline.core.deadline import Deadline

log = logging.getLogger("ragpacer.tools")


@dataclass(slots=True)
class ToolResult:
    name: str
    outcome: str  # ok | timeout | error | invalid_arguments
    result: Any = None
    error: str | None = None
    elapsed_ms: float = 0.0
    # The result in a sentence, for an answer made without the LLM (``Tool.describe``).
    statement: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "result": self.result,
                "error": self.error, "elapsed_ms": round(self.elapsed_ms, 3),
                "statement": self.statement}


async def _one(tool: Tool, args: dict[str, Any], deadline: Deadline) -> ToolResult:
    t0 = time.monotonic()
    try:
        validate_arguments(tool.parameters, args)
    except ToolArgumentError as exc:
        return ToolResult(tool.name, "invalid_arguments", error=str(exc))
    limit = min(tool.timeout_s, max(deadline.remaining_ms() / 1000.0, 0.0))
    try:
        async with asyncio.timeout(limit):
            value = await tool(args)
    except TimeoutError:
        return ToolResult(tool.name, "timeout", error=f"cut at {limit * 1000:.0f} ms",
                          elapsed_ms=(time.monotonic() - t0) * 1000)
    except Exception as exc:  # one tool's failure never fails the others or the request
        return ToolResult(tool.name, "error", error=f"{type(exc).__name__}: {exc}"[:300],
                          elapsed_ms=(time.monotonic() - t0) * 1000)
    return ToolResult(tool.name, "ok", result=value, elapsed_ms=(time.monotonic() - t0) * 1000,
                      statement=_statement(tool, value))


def _statement(tool: Tool, value: Any) -> str | None:
    describe = getattr(tool, "describe", None)
    if describe is None:
        return None
    try:
        return str(describe(value))
    except Exception:  # the result still informs the LLM; only its sentence is lost
        log.warning("%s.describe failed", tool.name, exc_info=True)
        return None


async def run_tools(calls: Sequence[tuple[Tool, dict[str, Any]]],
                    deadline: Deadline) -> list[ToolResult]:
    """All calls at once; every result comes back, in call order, by the deadline."""
    if not calls:
        return []
    return list(await asyncio.gather(*(_one(tool, args, deadline) for tool, args in calls)))

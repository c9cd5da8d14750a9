"""The tools stage: the route's tools, concurrently, under the stage's cut-off."""

from __future__ import annotations

from typing import Any, ClassVar

from ragpacer.agents.tool_runner import ToolResult, run_tools
from ragpacer.agents.tools import ToolArgumentError, ToolRegistry
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import Degraded, FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState


class ToolsStage(StageBase):
    name: ClassVar[str] = "tools"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset()

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        route = ctx.settings.routing.routes[state["route"]]
        calls: list[tuple[Any, dict[str, Any]]] = []
        rejected: list[ToolResult] = []
        for name in route.tools:
            tool = self.registry.get(name)
            try:
                calls.append((tool, tool.arguments_from(state)))
            except ToolArgumentError as exc:
                rejected.append(ToolResult(name, "invalid_arguments", error=str(exc)))
        results = rejected + await run_tools(calls, ctx.cutoff)
        update: Update = {"tool_results": [r.as_dict() for r in results if r.outcome == "ok"]}
        failed = [f"{r.name}: {r.outcome}" for r in results if r.outcome != "ok"]
        return Degraded(update, "; ".join(failed)) if failed else update

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        raise NotImplementedError(kind)

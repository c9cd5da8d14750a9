"""The request graph: the only place that adds nodes and edges.

    START -> input_guardrails -> intent --(route)--> features | retrieval | tools (parallel)
                                              \\-----------------------------> generation
          generation -> grounding -> output_guardrails -> END

The router reads the routing table; branch stages that a route does not list never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.graph import END, START, StateGraph

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.errors import ConfigError
from ragpacer.pipeline.core.plan import BRANCHES
from ragpacer.pipeline.core.runner import StageRunner
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.core.stage import Stage
from ragpacer.pipeline.core.state import RequestState

REQUIRED = ("input_guardrails", "intent", "generation", "grounding", "output_guardrails")


def build_graph(settings: Settings, stages: Mapping[str, Stage], runner: StageRunner) -> Any:
    missing = [s for s in REQUIRED if s not in stages]
    if missing:
        raise ConfigError(f"the graph needs stages {missing}")
    branches = [b for b in BRANCHES if b in stages]
    for name, route in settings.routing.routes.items():
        absent = [s for s in route.stages if s not in stages]
        if absent:
            raise ConfigError(
                f"route {name!r} uses stages {absent} that are not installed; "
                f"installed branch stages: {branches}",
                field=f"routing.routes.{name}.stages",
            )
    # Resolved once: the router is a dict lookup on every request.
    targets: dict[str, list[str]] = {
        name: list(route.stages) or ["generation"]
        for name, route in settings.routing.routes.items()
    }

    async def route_after_intent(state: RequestState) -> list[str]:
        return targets[state["route"]]

    g = StateGraph(RequestState, context_schema=RunContext)
    for name in (*REQUIRED, *branches):
        g.add_node(name, runner.node(stages[name]))
    g.add_edge(START, "input_guardrails")
    g.add_edge("input_guardrails", "intent")
    g.add_conditional_edges("intent", route_after_intent, [*branches, "generation"])
    for b in branches:
        g.add_edge(b, "generation")
    g.add_edge("generation", "grounding")
    g.add_edge("grounding", "output_guardrails")
    g.add_edge("output_guardrails", END)
    return g.compile()

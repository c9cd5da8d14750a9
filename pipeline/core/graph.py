"""The request graph: the only place that adds nodes and edges.

    START -> [input_guardrails, intent] --(route)--> features | retrieval | tools (parallel)
                                    \\-----------------------------> [generation,
          grounding, output_guardrails] -> END

The router reads the routing table; branch stages that a route does not list never run.
Stages in brackets always run one after another: each group is one node (one superstep),
its stages still run, are budgeted and recorded one by one.
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
        name: list(route.stages) or ["answer"]
        for name, route in settings.routing.routes.items()
    }

    async def route_after_intent(state: RequestState) -> list[str]:
        return targets[state["route"]]

    g = StateGraph(RequestState, context_schema=RunContext)
    g.add_node("understand", runner.sequence([stages["input_guardrails"], stages["intent"]]))
    for name in branches:
        g.add_node(name, runner.node(stages[name]))
    g.add_node("answer", runner.sequence(
        [stages["generation"], stages["grounding"], stages["output_guardrails"]]))
    g.add_edge(START, "understand")
    g.add_conditional_edges("understand", route_after_intent, [*branches, "answer"])
    for b in branches:
        g.add_edge(b, "answer")
    g.add_edge("answer", END)
    return g.compile()

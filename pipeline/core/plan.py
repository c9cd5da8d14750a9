"""Budgets resolved once at startup: per route, each stage's budget, reserve and fallback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ragpacer.pipeline.core.errors import ConfigError
from ragpacer.pipeline.core.settings import Settings, StageName
from ragpacer.pipeline.core.stage import FallbackKind

PRE_ROUTE: tuple[StageName, ...] = ("rewrite", "cache", "input_guardrails", "intent")
BRANCHES = ("features", "retrieval", "tools")
POST: tuple[StageName, ...] = ("generation", "grounding", "output_guardrails")
ANY_ROUTE = "*"


@dataclass(frozen=True, slots=True)
class StagePlan:
    budget_ms: float
    reserve_ms: float  # kept back for the stages that must still run after this one
    fallback: FallbackKind


def _route_sequence(branches: list[StageName]) -> list[list[StageName]]:
    """Stages in order; a group of stages runs in parallel."""
    groups: list[list[StageName]] = [[s] for s in PRE_ROUTE]
    if branches:
        groups.append(list(branches))
    groups += [[s] for s in POST]
    return groups


def build_plan(settings: Settings) -> dict[str, dict[str, StagePlan]]:
    plans: dict[str, dict[str, StagePlan]] = {}
    for name, route in settings.routing.routes.items():
        groups = _route_sequence(list(route.stages))
        plan: dict[str, StagePlan] = {}
        for i, group in enumerate(groups):
            # Parallel stages share the wait: what comes after them is what they must leave.
            after = sum(
                max(settings.stage(s, route).reserve_ms for s in later) for later in groups[i + 1 :]
            )
            for s in group:
                cfg = settings.stage(s, route)
                plan[s] = StagePlan(cfg.budget_ms, after, cfg.fallback)
        plans[name] = plan
    # Before the route is known, keep back what the most demanding route needs.
    plans[ANY_ROUTE] = {
        s: max((p[s] for p in plans.values()), key=lambda sp: sp.reserve_ms) for s in PRE_ROUTE
    }
    return plans


def check_fallbacks(settings: Settings, supported: Mapping[str, frozenset[FallbackKind]]) -> None:
    """Fail at startup when the config asks a stage for a fallback it cannot provide."""
    for name, cfg in settings.stages.items():
        if name not in supported:
            continue  # not installed: build_graph rejects routes that need it
        allowed = supported.get(name, frozenset()) | {"skip", "fail"}
        if cfg.fallback not in allowed:
            raise ConfigError(
                f"stage {name!r} cannot fall back to {cfg.fallback!r}; choose one of "
                f"{sorted(allowed)}",
                field=f"stages.{name}.fallback",
            )

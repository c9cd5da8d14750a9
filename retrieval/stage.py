"""The retrieval stage: route and request filters, then the index."""

from __future__ import annotations

from typing import ClassVar

from pipeline.context import RunContext
from pipeline.stage import Update
from pipeline.state import RequestState
from retrieval.bm25 import BM25Index
from retrieval.filters import Filters, merge_filters


class Retrieval:
    name: ClassVar[str] = "retrieval"
    fallbacks: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, index: BM25Index, route_filters: dict[str, Filters]) -> None:
        self.index = index
        self.route_filters = route_filters

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        route_name = state["route"]
        route = ctx.settings.routing.routes[route_name]
        filters = merge_filters(self.route_filters.get(route_name, {}), state.get("filters", {}))
        return {"sources": self.index.search(state["query"], route.top_k, filters)}

    def fallback(self, kind: str, state: RequestState, ctx: RunContext) -> Update:
        raise NotImplementedError(kind)

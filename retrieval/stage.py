"""The retrieval stage: route and request filters, then the index."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from pipeline.context import RunContext
from pipeline.stage import Update
from pipeline.state import RequestState
from retrieval.bm25 import BM25Index
from retrieval.filters import Filters, merge_filters
from retrieval.hybrid import HybridIndex


class Retrieval:
    """Hybrid search with the query vector the intent stage computed; BM25 as the fallback."""

    name: ClassVar[str] = "retrieval"
    fallbacks: ClassVar[frozenset[str]] = frozenset({"cheaper"})

    def __init__(self, index: BM25Index, route_filters: dict[str, Filters],
                 hybrid: HybridIndex | Any = None) -> None:
        self.index = index
        self.route_filters = route_filters
        # HybridIndex (in memory) or EdgeStore (Qdrant Edge): the same search() signature.
        self.hybrid = hybrid

    def _filters(self, state: RequestState) -> Filters:
        return merge_filters(self.route_filters.get(state["route"], {}), state.get("filters", {}))

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        top_k = ctx.settings.routing.routes[state["route"]].top_k
        vector = state.get("query_vector")
        if self.hybrid is None or vector is None:
            return {"sources": self.index.search(state["query"], top_k, self._filters(state))}
        cfg = ctx.settings.retrieval
        hits = self.hybrid.search(state["query"], vector, top_k, self._filters(state),
                                  cfg.mode, cfg.candidates)
        if inspect.isawaitable(hits):  # the Qdrant server backend is async
            hits = await hits
        return {"sources": hits}

    def fallback(self, kind: str, state: RequestState, ctx: RunContext) -> Update:
        """BM25 only, on the same corpus the main path searches."""
        top_k = ctx.settings.routing.routes[state["route"]].top_k
        if self.hybrid is not None and not inspect.iscoroutinefunction(self.hybrid.search):
            return {"sources": self.hybrid.search(state["query"], None, top_k,
                                                  self._filters(state), "bm25")}
        return {"sources": self.index.search(state["query"], top_k, self._filters(state))}

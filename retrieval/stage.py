"""The retrieval stage: route and request filters, then the index."""

from __future__ import annotations

from typing import ClassVar

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.filters import BOOST_RANKS, Filters, boost, merge_filters
from ragpacer.retrieval.sparse import SparseQuery
from ragpacer.retrieval.stores import Store


class Retrieval(StageBase):
    """Hybrid search with the query vector the intent stage computed; BM25 as the fallback."""

    name: ClassVar[str] = "retrieval"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})

    def __init__(self, index: BM25Index, route_filters: dict[str, Filters],
                 store: Store | None = None) -> None:
        self.index = index  # BM25 in memory: the search without a query vector or a store
        self.route_filters = route_filters
        self.store = store

    def _plan(self, state: RequestState,
              ctx: RunContext) -> tuple[Filters, Filters, int, int]:
        """(filters to search with, filters to boost, hits to fetch, hits to keep).

        A route's filters can hide the answer (a savings question routed to `fees` would never
        see the savings guides), so by default they only rank the route's documents first;
        the caller's own filters always narrow the search."""
        route = self.route_filters.get(state["route"], {})
        request = state.get("filters", {})
        top_k = ctx.settings.routing.routes[state["route"]].top_k
        if ctx.settings.retrieval.route_filters == "filter" or not route:
            return merge_filters(route, request), {}, top_k, top_k
        return request, route, top_k + BOOST_RANKS * 2, top_k

    def _sparse(self, state: RequestState, ctx: RunContext) -> SparseQuery:
        cfg = ctx.settings.retrieval
        if not cfg.feedback_docs:
            return state["query"]
        return self.index.feedback_terms(state["query"], cfg.feedback_docs, cfg.feedback_terms)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        search, preferred, fetch, top_k = self._plan(state, ctx)
        vector = state.get("query_vector")
        sparse = self._sparse(state, ctx)
        if self.store is None or vector is None:
            hits = self.index.search(sparse, fetch, search)
        else:
            cfg = ctx.settings.retrieval
            hits = await self.store.search(sparse, vector, fetch, search, cfg.mode,
                                           cfg.candidates, cfg.fusion)
        return {"sources": boost(hits, preferred, top_k)}

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        """BM25 only, on the same corpus the main path searches."""
        search, preferred, fetch, top_k = self._plan(state, ctx)
        hits = self.store.sparse_search(state["query"], fetch, search) if self.store else None
        if hits is None:
            hits = self.index.search(state["query"], fetch, search)
        return {"sources": boost(hits, preferred, top_k)}

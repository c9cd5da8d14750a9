"""The retrieval stage: route and request filters, then the index."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.filters import BOOST_RANKS, Filters, boost, merge_filters
from ragpacer.retrieval.questions import sub_questions
from ragpacer.retrieval.sparse import SparseQuery
from ragpacer.retrieval.stores import Store
from ragpacer.retrieval.types import Hit

# Embeds a text within the stage's cut-off (the intent classifier's own embedder).
Embed = Callable[[str, Any], Awaitable[np.ndarray]]
# The intent of a vector and its confidence (the intent classifier's head).
Classify = Callable[[np.ndarray], tuple[str, float]]


class Retrieval(StageBase):
    """Hybrid search with the query vector the intent stage computed; BM25 as the fallback."""

    name: ClassVar[str] = "retrieval"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})

    def __init__(self, index: BM25Index, route_filters: dict[str, Filters],
                 store: Store | None = None, embed: Embed | None = None,
                 classify: Classify | None = None) -> None:
        self.index = index  # BM25 in memory: the search without a query vector or a store
        self.route_filters = route_filters
        self.store = store
        self.embed = embed  # for the questions of a message that asks several
        self.classify = classify  # each of those questions' own route

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

    def _sparse(self, query: str, ctx: RunContext) -> SparseQuery:
        cfg = ctx.settings.retrieval
        if not cfg.feedback_docs:
            return query
        return self.index.feedback_terms(query, cfg.feedback_docs, cfg.feedback_terms)

    async def _search(self, query: str, vector: np.ndarray, fetch: int, search: Filters,
                      ctx: RunContext) -> list[Hit]:
        assert self.store is not None
        cfg = ctx.settings.retrieval
        return await self.store.search(self._sparse(query, ctx), vector, fetch, search,
                                       cfg.mode, cfg.candidates, cfg.fusion)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        search, preferred, fetch, top_k = self._plan(state, ctx)
        vector = state.get("query_vector")
        if self.store is None or vector is None:
            hits = self.index.search(self._sparse(state["query"], ctx), fetch, search)
            return {"sources": boost(hits, preferred, top_k)}
        hits = await self._search(state["query"], vector, fetch, search, ctx)
        asked = await self._questions(state, ctx)
        if not asked:
            return {"sources": boost(hits, preferred, top_k)}
        each = [await self._search(q, v, fetch, search, ctx) for q, v in asked]
        update: Update = {"sources": boost(answering_each(hits, each), preferred, top_k),
                          "sub_queries": asked}
        if self.classify is not None:  # a question may be one the help centre cannot answer
            routing = ctx.settings.routing
            update["sub_routes"] = [routing.route_of(*self.classify(v))[0] for _, v in asked]
        return update

    async def _questions(self, state: RequestState,
                         ctx: RunContext) -> list[tuple[str, np.ndarray]]:
        """The questions of a message that asks several, each with its vector; else []. Not
        of a follow-up carried with the previous turn: that turn was answered already."""
        if (self.embed is None or not ctx.settings.retrieval.split_questions
                or state.get("query_form", "asked") == "carried"):
            return []
        return [(q, await self.embed(q, ctx.cutoff))
                for q in sub_questions(state["query"], self.index.analyzer)]

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        """BM25 only, on the same corpus the main path searches."""
        search, preferred, fetch, top_k = self._plan(state, ctx)
        hits = self.store.sparse_search(state["query"], fetch, search) if self.store else None
        if hits is None:
            hits = self.index.search(state["query"], fetch, search)
        return {"sources": boost(hits, preferred, top_k)}


def answering_each(hits: list[Hit], each: Sequence[list[Hit]]) -> list[Hit]:
    """The whole message's best source, then each question's best, then the rest of the whole
    message's ranking: a source that answers one half is not outranked by two that answer
    the other."""
    merged: dict[str, Hit] = {}
    for hit in [*hits[:1], *(h[0] for h in each if h), *hits[1:]]:
        merged.setdefault(hit.id, hit)
    return list(merged.values())

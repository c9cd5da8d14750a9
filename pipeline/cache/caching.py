"""The response cache as a pipeline uses it: which backend, the lookup before the graph, and
which answers may be stored."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ragpacer.pipeline.cache.response import (
    CacheLookup,
    CacheUnavailable,
    CacheWriter,
    MemoryCache,
    RedisCache,
    ResponseCache,
    cache_key,
    semantic_scope,
)
from ragpacer.pipeline.cache.semantic import SemanticCache
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.result import Result

log = logging.getLogger("ragpacer.cache")


class Caching:
    """Redis when ``redis_url`` is set, else an in-process LRU; the semantic index beside it
    when the config asks for it and an embedding classifier can embed the query."""

    def __init__(self, settings: Settings, classifier: Any,
                 backend: ResponseCache | None = None) -> None:
        cfg = settings.cache
        self.settings = settings
        self.backend: ResponseCache = backend or (
            RedisCache(settings.redis_url) if settings.redis_url
            else MemoryCache(cfg.max_entries))
        self.semantic: SemanticCache | None = None
        if cfg.semantic and classifier is not None:
            self.semantic = SemanticCache(cfg.semantic_threshold, cfg.max_entries)
        self.lookup = CacheLookup(self.backend, self.semantic, classifier, cfg.max_entries)
        self._writer = CacheWriter(self.backend)

    def key(self, query: str, scope: dict[str, Any], version: str, tenant: str | None) -> str:
        return cache_key(query, scope, version, tenant)

    def store(self, key: str, result: Result, final: Mapping[str, Any],
              scope: dict[str, Any], tenant: str | None) -> bool:
        """Schedule the write of a cacheable answer (off the request path); False when the
        answer may not be cached."""
        if not self.cacheable(result):
            return False
        # An answer that quotes the asker's own words (a question said unanswered) answers
        # that text only: a paraphrase must not get another customer's words back.
        vector = None if result.unanswered else final.get("query_vector")

        def written() -> None:  # off the request path
            self.lookup.stored(key)
            # Indexed once written: a semantic match never points at an entry still on its
            # way to the backend (its lookup would pay a second round trip for a miss).
            if self.semantic is not None and vector is not None:
                self.semantic.add(key, semantic_scope(result.intent, scope, tenant), vector,
                                  result.query)

        self._writer.schedule(key, result.cache_payload(), self.settings.cache.ttl_s,
                              then=written)
        return True

    def cacheable(self, result: Result) -> bool:
        """Only whole, general answers: not degraded, cut or flagged, and not from a route
        that reads the customer's own data (features, tools)."""
        route = self.settings.routing.routes.get(result.route or "")
        if route is None or not route.cacheable or {"features", "tools"} & set(route.stages):
            return False
        return bool(result.answer and not result.degraded and not result.truncated
                    and not result.flags)

    async def astart(self) -> None:
        """Connect to Redis now; a Redis that is down is logged, and the requests go on
        without the cache until it is back (the circuit breaker)."""
        if isinstance(self.backend, RedisCache):
            try:
                await self.backend.connect()
            except CacheUnavailable as exc:
                log.warning("the response cache starts without Redis: %s", exc)

    async def drain(self) -> None:
        """Wait for the scheduled writes (tests, shutdown)."""
        await self._writer.drain()

    async def aclose(self) -> None:
        await self.drain()
        if isinstance(self.backend, RedisCache):
            await self.backend.aclose()

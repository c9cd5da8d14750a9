"""Response cache: exact match on the normalised query and its scope, checked before the graph.

The in-process LRU is the embedded default; a Redis backend plugs in behind the same protocol.
Writes never run on the request path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar

import orjson

from ragpacer.pipeline.breaker import CircuitBreaker
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState

log = logging.getLogger("ragpacer.cache")
_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.]+$")
T = TypeVar("T")
# Connections for overlapped GETs, opened one at a time in the background as needed.
MAX_GET_CONNECTIONS = 16
_STALE = object()


def normalise_query(query: str) -> str:
    return _TRAILING.sub("", _SPACE.sub(" ", query.strip().lower()))


def cache_key(query: str, filters: dict[str, Any], version: str,
              tenant: str | None = None) -> str:
    """``query``: the standalone form (a follow-up's, never its bare words). The route is
    decided from that query under the config that ``version`` names, so the key fixes the
    route too without waiting for the intent stage."""
    raw = f"{version}\x1f{_canonical([tenant, filters])}\x1f{normalise_query(query)}"
    # Hashed: the key may reach Redis and must not carry the query's text.
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _canonical(value: Any) -> str:
    """One spelling per value (keys sorted): equal scopes give equal keys."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


class ResponseCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None: ...


class MemoryCache:
    """An LRU with per-entry expiry, for one process."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.max_entries = max_entries

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class CacheUnavailable(RuntimeError):
    """The shared cache cannot be reached; the request goes on without it."""


class RedisCache:
    """Redis through redis.asyncio, with short timeouts and a circuit breaker.

    When Redis is down, the first failure opens the circuit (``pipeline.breaker``): calls fail
    at once instead of each paying a connect timeout, then one call probes again. No
    thundering herd of reconnects. A call cancelled by its caller (the cache stage's budget
    ran out) is no failure of Redis: it leaves the circuit as it was.
    """

    def __init__(self, url: str, *, prefix: str = "ragpacer:cache:",
                 timeout_s: float = 0.05, client_name: str = "ragpacer-cache") -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One immediate retry on a broken connection: after a Redis restart the pooled
        # connections are dead, and the first request should not pay for that with a miss.
        self._redis = redis.from_url(url, socket_connect_timeout=timeout_s,
                                     socket_timeout=timeout_s, retry_on_timeout=False,
                                     retry=Retry(NoBackoff(), 1),
                                     retry_on_error=[redis.ConnectionError],
                                     client_name=client_name)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker()
        self._idle: list[Any] = []  # connections of `get_while`, each with no reply pending
        self._get_connections = 0  # idle, in use and opening
        self._opening: asyncio.Task[None] | None = None

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self._admit()
        return await self._admitted_call(op, *args, **kwargs)

    async def _admitted_call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await getattr(self._redis, op)(*args, **kwargs)
        except Exception as exc:  # redis' errors and its socket timeouts
            raise self._failed(exc) from exc
        except BaseException:
            # Cancelled by the caller's budget: Redis may be healthy, and opening the circuit
            # would also drop the writes that follow. A cancelled probe lets the next probe.
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise CacheUnavailable(
                f"redis circuit open for {self.breaker.retry_in_s():.1f} s")

    def _failed(self, exc: Exception) -> CacheUnavailable:
        self.breaker.failure()
        return CacheUnavailable(f"redis: {type(exc).__name__}: {exc}")

    async def connect(self) -> None:
        """Open a pooled connection and one for overlapped GETs now (at start): a lookup
        under the cache stage's few milliseconds must not pay the connect and handshake of a
        cold worker."""
        await self._call("ping")
        if not self._idle:
            try:
                await self._open_get_connection()
            except Exception as exc:
                raise self._failed(exc) from exc

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._call("get", self.prefix + key)
        return orjson.loads(raw) if raw else None

    async def get_while(self, key: str, work: Callable[[], Awaitable[T]]
                        ) -> tuple[dict[str, Any] | None, T]:
        """GET ``key`` with ``work`` done while Redis answers: the command is sent, ``work``
        runs (the query's embedding, on the loop), then the reply is read, by then waiting in
        the socket. A miss costs the work, not the work plus a round trip and the wake-up.

        Its connections are kept apart from redis-py's pool: one comes back only after its
        reply was read whole, so taking it needs no poll of the socket, and the send is a
        plain write under this call's own timeout (redis-py's socket timeout runs each send
        in a task of its own). None is ever opened on the request path: with every one in
        use, the lookup goes first through the pool and one more is opened in the
        background."""
        if not self._idle:
            self._grow()
            return await self.get(key), await work()
        self._admit()
        conn = self._idle.pop()
        try:
            raw, done = await self._exchange(conn, key, work)
        except BaseException:  # cancelled, or the work failed: no failure of Redis
            await self._drop(conn)  # a reply may be left unread
            self.breaker.release()
            raise
        if raw is _STALE:  # Redis closed it (a restart, an idle timeout): once more, pooled
            await self._drop(conn)
            raw = await self._admitted_call("get", self.prefix + key)
        else:
            self._idle.append(conn)
            self.breaker.success()
        return (orjson.loads(raw) if raw else None), done

    async def _exchange(self, conn: Any, key: str,
                        work: Callable[[], Awaitable[T]]) -> tuple[Any, T]:
        """The reply, or ``_STALE`` when the connection failed."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.send_packed_command(conn.pack_command("GET", self.prefix + key),
                                               check_health=False)
        except Exception:
            return _STALE, await work()
        done = await work()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await conn.read_response(), done  # on any error, redis-py disconnects
        except Exception:
            return _STALE, done

    async def _open_get_connection(self) -> None:
        pool = self._redis.connection_pool
        conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        self._get_connections += 1
        try:
            await conn.connect()
        except BaseException:
            self._get_connections -= 1
            raise
        self._idle.append(conn)

    def _grow(self) -> None:
        if (self._opening is not None or self._get_connections >= MAX_GET_CONNECTIONS
                or not self.breaker.closed):
            return
        self._opening = asyncio.get_running_loop().create_task(self._open_in_background())

    async def _open_in_background(self) -> None:
        try:
            await self._open_get_connection()
        except Exception as exc:  # the pooled path serves meanwhile
            log.debug("no new connection for overlapped GETs: %s", exc)
        finally:
            self._opening = None

    async def _drop(self, conn: Any) -> None:
        self._get_connections -= 1
        await conn.disconnect(nowait=True)

    async def set(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        # orjson: a write runs on the loop beside other requests' stages (~10x the stdlib's
        # speed on a 2 KB answer).
        payload = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        await self._call("set", self.prefix + key, payload, px=max(1, int(ttl_s * 1000)))

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._drop(conn)
        await self._redis.aclose()


async def redis_persistence(url: str) -> str:
    """How Redis keeps the cache across a restart: "aof", "rdb", "none" (lost on restart) or
    "unknown" (down, or CONFIG is disabled, as managed Redis services often do)."""
    import redis.asyncio as redis

    client = redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        conf = await client.config_get("appendonly") | await client.config_get("save")
    except Exception:  # informational: never fails readiness
        return "unknown"
    finally:
        await client.aclose()
    text = {_text(k): _text(v) for k, v in conf.items()}
    if text.get("appendonly") == "yes":
        return "aof"
    return "rdb" if text.get("save") else "none"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def semantic_scope(intent: str | None, filters: dict[str, Any], tenant: str | None = None) -> str:
    return f"{tenant}\x1f{intent}\x1f{_canonical(filters)}"


class CacheLookup(StageBase):
    """Runs before the graph, under the runner like every stage; a miss or a timeout is free.

    Exact match first; on a miss, and when an embedding classifier is configured, the query is
    embedded (once: the intent stage and the retriever reuse the vector) and looked up in the
    semantic index within its intent and filter scope. With a backend that is a round trip
    away (Redis), a key this process has not seen stored is likely a miss: it is embedded
    while the lookup travels, and only a key known stored is looked up first on its own.
    """

    name: ClassVar[str] = "cache"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset()
    # Under load its wall time is the event loop's queue (its own work is a lookup and one
    # embedding the later stages reuse), and skipping it sends every request, hits included,
    # down the whole graph: more load, a slower loop, the cache never back. It is only cut.
    skip_when_slow: ClassVar[bool] = False

    def __init__(self, cache: ResponseCache, semantic: Any = None, classifier: Any = None,
                 known_keys: int = 10_000):
        self.cache = cache
        self.semantic = semantic  # pipeline.semantic_cache.SemanticCache
        self.classifier = classifier  # agents.intents.EmbeddingIntentClassifier
        # Resolved once: only a remote backend has a lookup worth overlapping. None: every
        # lookup goes first, alone (how it ran before; the benchmark's baseline).
        self.overlapped_get = getattr(cache, "get_while", None)
        self._stored: OrderedDict[str, None] = OrderedDict()  # keys seen stored, LRU
        self.known_keys = known_keys

    def stored(self, key: str) -> None:
        """``key`` holds an answer (written or found): its next lookup is likely a hit."""
        if self.overlapped_get is None:
            return
        self._stored[key] = None
        self._stored.move_to_end(key)
        if len(self._stored) > self.known_keys:
            self._stored.popitem(last=False)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        key = state["cache_key"]
        if self.semantic is None or self.classifier is None:
            hit = await self.cache.get(key)
            return {} if hit is None else {"cached": hit, "cache_hit": "exact"}
        vector = None
        if self.overlapped_get is not None and key not in self._stored:
            hit, vector = await self.overlapped_get(key, partial(self._embed, state, ctx))
        else:
            hit = await self.cache.get(key)
        if hit is not None:
            self.stored(key)
            return {"cached": hit, "cache_hit": "exact"}
        self._stored.pop(key, None)  # expired or evicted
        if vector is None:
            vector = await self._embed(state, ctx)
        return await self._semantic_lookup(state, vector)

    async def _embed(self, state: RequestState, ctx: RunContext) -> Any:
        """The query's vector, left in the lookup's own state, where the request takes it
        (also when the stage is cut after it, waiting for Redis: no second embedding)."""
        vector = state["query_vector"] = await self.classifier.aembed(state["query"],
                                                                      ctx.cutoff)
        return vector

    async def _semantic_lookup(self, state: RequestState, vector: Any) -> Update:
        intent, _ = self.classifier.classify_vector(vector)
        key = self.semantic.lookup(semantic_scope(intent, state.get("filters", {}),
                                                  state.get("tenant")), vector,
                                   state["query"])
        hit = await self.cache.get(key) if key is not None else None
        if hit is not None:
            return {"cached": hit, "cache_hit": "semantic"}
        return {}

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        raise NotImplementedError(kind)


class CacheWriter:
    """Schedules writes as background tasks and keeps them referenced until done."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, key: str, value: dict[str, Any], ttl_s: float,
                 then: Callable[[], None] | None = None) -> None:
        """``then``: run once the write succeeded."""
        task = asyncio.get_running_loop().create_task(self._write(key, value, ttl_s, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key: str, value: dict[str, Any], ttl_s: float,
                     then: Callable[[], None] | None) -> None:
        try:
            await self.cache.set(key, value, ttl_s)
        except Exception as exc:  # a lost cache write costs a later miss, nothing more
            log.info("cache write skipped: %s", exc)
            return
        if then is not None:
            then()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

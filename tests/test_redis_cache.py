"""The response cache against the real Redis server (and one we stop and restart)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from ragpacer.pipeline.cache.response import CacheUnavailable, RedisCache
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.support.http import free_port
from tests.support.redis import ReplyGate, redis_up
from tests.support.resources import RESOURCES

pytestmark = pytest.mark.redis
REDIS = "redis://127.0.0.1:6379/0"
QUESTION = "what does an overdraft cost"


@pytest.fixture
def own_redis() -> Iterator[tuple[int, callable]]:  # type: ignore[valid-type]
    """A redis-server of this test's own on a free port, which the test may stop."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL))
        for _ in range(100):
            if redis_up(f"redis://127.0.0.1:{port}/0"):
                return
            time.sleep(0.02)

    start()
    yield port, start
    for p in procs:
        p.kill()
        p.wait()


def count_embeddings(p: Pipeline, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries the pipeline's cache lookup and intent stage embed, in order."""
    classifier = p.caching.lookup.classifier
    embed = classifier.aembed
    embedded: list[str] = []

    async def spy(query: str, deadline: object = None) -> object:
        embedded.append(query)
        return await embed(query, deadline)

    monkeypatch.setattr(classifier, "aembed", spy)
    return embedded


@pytest.fixture(autouse=True)
def _need_redis() -> None:
    if not redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")


async def test_hit_miss_and_ttl() -> None:
    cache = RedisCache(REDIS, prefix=f"ragpacer-test:{os.getpid()}:")
    assert await cache.get("k") is None
    await cache.set("k", {"answer": "a"}, ttl_s=0.2)
    assert await cache.get("k") == {"answer": "a"}
    await asyncio.sleep(0.3)
    assert await cache.get("k") is None, "the entry must expire with its TTL"
    await cache.aclose()


async def test_pipeline_answers_from_redis(scripted) -> None:
    # A TTL unique to this run gives a fresh key space (the config is part of the key).
    p = Pipeline(make_settings(scripted.url, redis_url=REDIS,
                               cache={"ttl_s": 30 + time.time() % 1}, retrieval={"mode": "bm25"},
                               routing={"classifier": "lexical"}), resources=RESOURCES)
    first = await p.arun(QUESTION)
    await p.caching.drain()
    second = await p.arun(QUESTION)
    assert not first.cached and second.cached and second.answer == first.answer
    assert len(scripted.requests) == 1
    # Another pipeline (another process) with the same config and index shares the entry.
    other = Pipeline(p.settings, resources=RESOURCES)
    assert other.version == p.version
    assert (await other.arun(QUESTION)).cached
    await p.aclose()
    await other.aclose()


async def test_redis_stopped_mid_test_is_bypassed_then_recovered(scripted, own_redis) -> None:
    port, start = own_redis
    p = Pipeline(make_settings(scripted.url, redis_url=f"redis://127.0.0.1:{port}/0",
                               retrieval={"mode": "bm25"}, routing={"classifier": "lexical"}),
                                   resources=RESOURCES)
    assert not (await p.arun(QUESTION)).degraded
    await p.caching.drain()
    assert (await p.arun(QUESTION)).cached

    await asyncio.to_thread(subprocess.run, ["redis-cli", "-p", str(port), "shutdown", "nosave"],
                            capture_output=True)
    down = await p.arun(QUESTION)
    assert down.answer and not down.cached and "cache" in down.degraded
    rec = down.stages[0]
    assert rec.name == "cache" and rec.outcome.value == "error"
    again = await p.arun(QUESTION)  # the circuit is open: no new connection attempt
    assert "circuit open" in (again.stages[0].detail or "")

    await asyncio.to_thread(start)
    assert isinstance(p.caching.backend, RedisCache)
    # Skip the backoff wait; recovery itself is what we test.
    p.caching.backend.breaker.success()
    recovered = await p.arun(QUESTION)
    assert "cache" not in recovered.degraded
    await p.caching.drain()
    assert (await p.arun(QUESTION)).cached
    await p.aclose()


async def test_circuit_fails_fast_while_open() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    with pytest.raises(CacheUnavailable):
        await cache.get("k")
    with pytest.raises(CacheUnavailable, match="circuit open"):
        await cache.get("k")
    await cache.aclose()


@pytest.mark.parametrize("persistent", [True, False])
async def test_cache_survives_a_restart_only_with_persistence_and_loss_is_never_wrong(
        scripted, tmp_path, persistent: bool) -> None:  # type: ignore[no-untyped-def]
    from ragpacer.pipeline.cache.response import redis_persistence

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    durable = ["--appendonly", "yes", "--appendfsync", "always"] if persistent \
        else ["--save", "", "--appendonly", "no"]
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
           *durable]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        for _ in range(200):
            if redis_up(url):
                return proc
            time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    proc = start()
    assert await redis_persistence(url) == ("aof" if persistent else "none")
    p = Pipeline(make_settings(scripted.url, redis_url=url, retrieval={"mode": "bm25"},
                               routing={"classifier": "lexical"}), resources=RESOURCES)
    fresh = await p.arun(QUESTION)
    await p.caching.drain()
    assert (await p.arun(QUESTION)).cached

    proc.kill()  # SIGKILL: no chance to save on the way out
    proc.wait()
    proc = start()
    after = await p.arun(QUESTION)
    assert after.cached is persistent
    assert after.answer == fresh.answer and [s.id for s in after.sources] == \
        [s.id for s in fresh.sources], "a lost cache recomputes the same answer"
    await p.aclose()
    proc.kill()
    proc.wait()


async def test_a_call_cancelled_by_its_budget_leaves_the_circuit_closed() -> None:
    """The cache stage's budget cancels a slow lookup; Redis is healthy, and the answer's
    write that follows must still reach it (an open circuit would drop it)."""
    cache = RedisCache(REDIS, prefix=f"ragpacer-test:{os.getpid()}:")
    lookup = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0)  # the lookup is connecting
    lookup.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup
    assert cache.breaker.closed
    await cache.set("k", {"answer": "a"}, ttl_s=5)
    assert await cache.get("k") == {"answer": "a"}
    await cache.aclose()


async def test_an_overlapped_get_cut_short_never_hands_its_reply_to_the_next(
        ) -> None:
    """A lookup cancelled while its work runs leaves its reply unread in the socket; the next
    lookup must read its own key's value, not that reply."""
    cache = RedisCache(REDIS, prefix=f"ragpacer-test:{os.getpid()}:{time.time()}:")
    await cache.connect()
    await cache.set("a", {"answer": "a"}, ttl_s=5)
    await cache.set("b", {"answer": "b"}, ttl_s=5)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(5)

    lookup = asyncio.create_task(cache.get_while("a", slow))
    await started.wait()
    await asyncio.sleep(0.05)  # Redis's reply to GET a is in the socket by now
    lookup.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup

    async def work() -> str:
        return "done"

    assert await cache.get_while("b", work) == ({"answer": "b"}, "done")
    assert await cache.get_while("a", work) == ({"answer": "a"}, "done")
    assert cache.breaker.closed
    await cache.aclose()


async def test_an_overlapped_get_after_a_redis_restart_still_answers(own_redis) -> None:
    """The connection kept for overlapped GETs dies with a restart of Redis; the first lookup
    after it must not turn into a cache failure (a miss, an open circuit)."""
    port, start = own_redis
    cache = RedisCache(f"redis://127.0.0.1:{port}/0")
    await cache.connect()

    async def work() -> str:
        return "done"

    assert await cache.get_while("k", work) == (None, "done")
    await asyncio.to_thread(subprocess.run, ["redis-cli", "-p", str(port), "shutdown", "nosave"],
                            capture_output=True)
    await asyncio.to_thread(start)
    await cache.set("k", {"answer": "a"}, ttl_s=5)  # the pool reconnects on its own
    assert await cache.get_while("k", work) == ({"answer": "a"}, "done")
    assert cache.breaker.closed
    assert await cache.get_while("k", work) == ({"answer": "a"}, "done")
    await cache.aclose()


async def test_a_started_pipeline_has_its_redis_connection_before_the_first_request(
        scripted) -> None:  # type: ignore[no-untyped-def]
    """A new worker's first lookup has the cache stage's 20 ms: it must not spend them on
    the connect and handshake."""
    import redis

    def connections() -> set[str]:
        clients = redis.Redis.from_url(REDIS).client_list()
        return {c["id"] for c in clients if c["name"] == "ragpacer-cache"}

    before = connections()
    p = Pipeline(make_settings(scripted.url, redis_url=REDIS, retrieval={"mode": "bm25"},
                               routing={"classifier": "lexical"}), resources=RESOURCES)
    await p.astart()
    started = connections() - before
    assert len(started) == 2, "astart opens the cache's connections: pooled, overlapped GET"
    assert not (await p.arun(QUESTION)).degraded
    assert connections() - before == started, "the first lookup reuses it"
    await p.aclose()


async def test_a_new_question_is_embedded_while_redis_looks_it_up(scripted, monkeypatch) -> None:
    """A key this worker has not seen stored is likely a miss: the query is embedded while
    its lookup travels. Redis's reply is held until the embedding starts, so a lookup that
    waited for its reply before embedding would wait until the cache stage's cut."""
    gate = ReplyGate()
    url = await gate.start()
    p = Pipeline(make_settings(scripted.url, redis_url=url, retrieval={"mode": "bm25"},
                               stages={"cache": {"budget_ms": 2000, "fallback": "skip"}}),
                 resources=RESOURCES)
    p.version += f"-{time.time()}"  # keys of this run only
    await p.astart()
    classifier = p.caching.lookup.classifier
    embed = classifier.aembed
    reply_held: list[bool] = []

    async def spy(query: str, deadline: object = None) -> object:
        reply_held.append(not gate.open.is_set())
        gate.open.set()
        return await embed(query, deadline)

    monkeypatch.setattr(classifier, "aembed", spy)
    gate.open.clear()
    first = await p.arun(QUESTION)
    cache = first.stages[0]
    assert cache.name == "cache" and cache.outcome.value == "ok", cache
    assert reply_held == [True], "embedded once, while Redis's reply was on its way"
    assert not first.cached and not first.degraded

    await p.caching.drain()
    again = await p.arun(QUESTION)
    assert again.cache_hit == "exact" and reply_held == [True], \
        "a key known stored is looked up alone: a hit pays no embedding"
    await p.aclose()
    await gate.aclose()


async def test_another_workers_answer_is_a_hit_then_a_known_key(scripted, monkeypatch) -> None:
    """An answer another worker stored is found by the overlapped lookup (one embedding
    spent), and from then on this worker looks it up alone."""
    settings = make_settings(scripted.url, redis_url=REDIS, retrieval={"mode": "bm25"})
    writer, reader = (Pipeline(settings, resources=RESOURCES) for _ in range(2))
    version = f"{writer.version}-{time.time()}"
    writer.version = reader.version = version
    fresh = await writer.arun(QUESTION)
    await writer.caching.drain()

    embedded = count_embeddings(reader, monkeypatch)
    other = await reader.arun(QUESTION)
    assert other.cache_hit == "exact" and other.answer == fresh.answer
    assert len(embedded) == 1
    assert (await reader.arun(QUESTION)).cache_hit == "exact" and len(embedded) == 1
    await writer.aclose()
    await reader.aclose()


async def test_a_lookup_cut_while_redis_answers_keeps_the_query_vector(
        scripted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The cache stage embeds a new question while its GET travels; when Redis is slow and
    the stage is cut at its budget, the request goes on with that vector instead of paying
    for a second embedding."""
    gate = ReplyGate()
    url = await gate.start()
    p = Pipeline(make_settings(scripted.url, redis_url=url, retrieval={"mode": "bm25"},
                               stages={"cache": {"budget_ms": 100, "fallback": "skip"}}),
                 resources=RESOURCES)
    p.version += f"-{time.time()}"
    await p.astart()
    embedded = count_embeddings(p, monkeypatch)
    gate.open.clear()  # Redis's replies are held: the lookup is cut at its budget
    result = await p.arun(QUESTION)
    cache = result.stages[0]
    assert cache.name == "cache" and cache.outcome.value == "timeout", cache
    assert result.answer and result.intent
    assert embedded == [QUESTION], "embedded once, in the cut lookup; the intent stage reused it"
    gate.open.set()
    await p.aclose()
    await gate.aclose()


async def test_overlapped_gets_open_no_connection_on_the_request_path() -> None:
    """With its only kept connection in use, a second lookup goes first through the pool,
    answers right, and one more connection opens in the background for the next ones."""
    import redis

    name = f"ragpacer-test-{os.getpid()}-{time.time_ns()}"
    cache = RedisCache(REDIS, prefix=f"ragpacer-test:{name}:", client_name=name)

    def connections() -> int:
        return sum(c["name"] == name for c in redis.Redis.from_url(REDIS).client_list())

    await cache.connect()
    await cache.set("a", {"answer": "a"}, ttl_s=5)
    assert connections() == 2, "the pool's and one for overlapped GETs"
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "held"

    async def work() -> str:
        return "done"

    opened_by: list[object] = []
    open_connection = cache._open_get_connection

    async def spy() -> None:
        opened_by.append(asyncio.current_task())
        await open_connection()

    cache._open_get_connection = spy  # type: ignore[method-assign]
    first = asyncio.create_task(cache.get_while("a", held))
    await asyncio.sleep(0)  # the first lookup holds the kept connection
    assert await cache.get_while("a", work) == ({"answer": "a"}, "done")
    assert asyncio.current_task() not in opened_by, "the lookup did not connect"
    release.set()
    assert await first == ({"answer": "a"}, "held")
    for _ in range(100):
        if connections() == 3:
            break
        await asyncio.sleep(0.01)
    assert connections() == 3 and len(opened_by) == 1, "one more opened in the background"
    both = await asyncio.gather(cache.get_while("a", work), cache.get_while("a", work))
    assert both == [({"answer": "a"}, "done")] * 2
    assert connections() == 3, "two lookups at once now each take a kept connection"
    await cache.aclose()

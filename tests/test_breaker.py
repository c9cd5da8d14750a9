"""The circuit breaker the cache and the rate limiter share, and the limiter's own bounds."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from ragpacer.pipeline.breaker import CircuitBreaker
from ragpacer.pipeline.serving import auth
from ragpacer.pipeline.serving.auth import RedisTokenBucket, TokenBucket
from tests.support.http import free_port
from tests.support.redis import redis_up

REDIS = "redis://127.0.0.1:6379/0"


async def test_half_open_lets_exactly_one_of_many_concurrent_callers_probe() -> None:
    breaker = CircuitBreaker(backoff_s=0.05)
    breaker.failure()
    assert not breaker.allow()  # open: refused at once
    await asyncio.sleep(0.06)
    probe = asyncio.Event()
    calls: list[int] = []

    async def caller(i: int) -> bool:
        if not breaker.allow():
            return False
        calls.append(i)
        await probe.wait()  # the probe is in flight while the others arrive
        breaker.success()
        return True

    tasks = [asyncio.create_task(caller(i)) for i in range(20)]
    await asyncio.sleep(0.01)
    probe.set()
    allowed = await asyncio.gather(*tasks)
    assert sum(allowed) == 1 and len(calls) == 1
    assert breaker.closed and breaker.allow()  # the probe's success closed it


def test_a_failed_probe_opens_it_again_for_longer(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ragpacer.pipeline import breaker as module

    now = [100.0]  # a clock the test moves: no wall-clock time involved
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(backoff_s=1.0, max_s=4.0)
    breaker.failure()
    assert breaker.retry_in_s() == 1.0 and not breaker.allow()
    now[0] += 1.0
    assert breaker.allow() and not breaker.allow()  # one probe
    breaker.failure()
    assert breaker.retry_in_s() == 2.0  # doubled
    for _ in range(3):
        now[0] += 10.0
        assert breaker.allow()
        breaker.failure()
    assert breaker.retry_in_s() == 4.0  # capped at max_s


async def test_a_call_cancelled_after_the_circuit_opened_does_not_hand_on_the_probe(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Admitted while closed, cancelled while another caller probes: a second probe would
    make a second caller pay the dead service's timeout."""
    from ragpacer.pipeline import breaker as module

    now = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(backoff_s=1.0, max_s=8.0)
    admitted, probed, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def early_call() -> None:  # admitted closed, then cut by its caller
        assert breaker.allow()
        admitted.set()
        await probed.wait()
        breaker.release()
        cancelled.set()

    async def probe() -> None:
        await admitted.wait()
        breaker.failure()  # another call failed: open
        now[0] += 1.0  # half-open
        assert breaker.allow()  # this task probes
        probed.set()
        await cancelled.wait()
        assert not breaker.allow() and not breaker.available()  # still this task's probe
        breaker.release()  # the probe itself cancelled: the next caller probes
        assert breaker.available()

    await asyncio.gather(early_call(), probe())


def test_a_probe_that_never_reports_is_handed_on_after_max_s(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ragpacer.pipeline import breaker as module

    now = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(backoff_s=1.0, max_s=8.0)
    breaker.failure()
    now[0] += 1.0
    assert breaker.allow() and not breaker.allow()  # the probe, lost without an outcome
    now[0] += 7.9
    assert not breaker.allow()
    now[0] += 0.2
    assert breaker.allow()  # not half-open for ever


async def test_the_in_process_limiter_keeps_its_memory_bounded() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2, max_callers=1000)
    for i in range(100_000):
        await bucket.take(f"10.0.{i // 256}.{i % 256}")
    assert len(bucket) == 1000
    # The most recent callers are the ones kept: this one's bucket is still being drained.
    assert await bucket.take("10.0.390.159") == 0.0
    assert await bucket.take("10.0.390.159") > 0.0


async def test_redis_down_costs_one_timeout_then_the_breaker_answers() -> None:
    bucket = RedisTokenBucket(f"redis://127.0.0.1:{free_port()}/0", rate_per_s=1.0, burst=5)
    calls = 0
    script = bucket._script

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)

    bucket._script = counted  # type: ignore[assignment]
    waits = [await bucket.take("k") for _ in range(50)]
    assert calls == 1 and not bucket.breaker.closed  # one failed call, then refused at once
    assert waits[:5] == [0.0] * 5 and waits[5] > 0  # the in-process bucket answered
    await bucket._redis.aclose()


@pytest.mark.redis
async def test_servers_whose_clocks_disagree_share_one_redis_bucket(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if not redis_up(REDIS):
        pytest.skip("no Redis on 127.0.0.1:6379")
    who = f"clock-{uuid.uuid4().hex}"
    a = RedisTokenBucket(REDIS, rate_per_s=0.1, burst=2)
    b = RedisTokenBucket(REDIS, rate_per_s=0.1, burst=2)
    assert await a.take(who) == 0.0 and await a.take(who) == 0.0  # the burst, spent
    real = time.time
    monkeypatch.setattr(auth.time, "time", lambda: real() + 10.0)  # b's clock: 10 s ahead
    wait = await b.take(who)
    assert wait > 5.0  # no token appeared from the clock skew (one refills in 10 s)
    await a._redis.aclose()
    await b._redis.aclose()


@pytest.mark.redis
async def test_a_started_limiter_takes_its_first_token_in_one_round_trip() -> None:
    """A new worker's first call would otherwise connect and load the script on a 50 ms
    timeout; over it, the circuit opens and the worker keeps a burst of its own."""
    import redis.asyncio as aioredis

    if not redis_up(REDIS):
        pytest.skip("no Redis on 127.0.0.1:6379")
    probe = aioredis.from_url(REDIS)
    await probe.script_flush()
    bucket = RedisTokenBucket(REDIS, rate_per_s=1.0, burst=2)
    await bucket.connect()
    assert await probe.script_exists(bucket._script.sha) == [True]
    def evalsha(stats: dict) -> tuple[int, int]:  # type: ignore[type-arg]
        calls = stats.get("cmdstat_evalsha", {})
        return calls.get("calls", 0), calls.get("failed_calls", 0)

    before = evalsha(await probe.info("commandstats"))
    assert await bucket.take(f"first-{uuid.uuid4().hex}") == 0.0
    after = evalsha(await probe.info("commandstats"))
    assert after == (before[0] + 1, before[1]), "one EVALSHA, found: no NOSCRIPT, no reload"
    assert bucket.breaker.closed
    await bucket._redis.aclose()
    await probe.aclose()


@pytest.mark.redis
async def test_a_take_cancelled_by_its_client_leaves_the_circuit_closed() -> None:
    if not redis_up(REDIS):
        pytest.skip("no Redis on 127.0.0.1:6379")
    bucket = RedisTokenBucket(REDIS, rate_per_s=1.0, burst=2)
    take = asyncio.create_task(bucket.take(f"gone-{uuid.uuid4().hex}"))
    await asyncio.sleep(0)  # connecting
    take.cancel()
    with pytest.raises(asyncio.CancelledError):
        await take
    assert bucket.breaker.closed
    await bucket._redis.aclose()

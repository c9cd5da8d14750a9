"""Cache hits and misses through the SDK, the cache under load, the feature stage's stores,
and concurrent tools.

A miss is measured as the cache stage's own time on a new question (exact lookup, the query
embedded, the semantic lookup), against the query embedding alone on a question of the same
shape, interleaved in one run. Each answer's cache write is waited for before the next
question, as the time a response takes to reach its client and the next question to arrive
would allow (back to back, the write ran inside the next lookup's wait for Redis); on
asyncio's default loop and on uvloop (the loop `ragpacer serve` runs on: a Redis round trip
costs the loop about half the CPU there). With Redis, the shipped lookup (a new question
embedded while its GET travels) alternates A B B A with the lookup first, the embedding after.

Rerun:  .venv/bin/python -m evals.bench_cache_features_tools [--n 1000] [--only misses]
Needs Redis on 127.0.0.1:6379 and `ragpacer features materialize` for both stores.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import uvloop

from evals.common import percentiles, save
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.core.stage import Outcome
from ragpacer.pipeline.features.stage import FeaturesStage, materialize
from ragpacer.pipeline.sdk import Pipeline

REDIS = "redis://127.0.0.1:6379/0"
CONFIG = Path("ragpacer.yaml")


def settings(**over):  # type: ignore[no-untyped-def]
    base = {"llm": {"engine": "external", "models": [{"name": "smollm2",
                                                      "url": "http://127.0.0.1:9/v1"}]},
            "tracing": {"exporter": "none"}}
    return load_settings(CONFIG, environ={}, overrides={**base, **over})


async def cache_hits(n: int, redis: bool) -> dict:
    p = Pipeline(settings(redis_url=REDIS if redis else None))
    p.version += f"-bench-{time.time()}"
    await p.arun("how do I freeze my card")
    await p.caching.drain()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await p.arun("how do I freeze my card")
        times.append((time.perf_counter() - t0) * 1000)
        assert r.cached
    await p.aclose()
    return percentiles(times)


async def cache_misses(n: int, redis: bool, overlap: bool = True) -> dict:
    """``overlap``: with Redis, a new question is embedded while its lookup travels (shipped);
    False: looked up first, then embedded (how it ran before)."""
    p = Pipeline(settings(redis_url=REDIS if redis else None))
    p.version += f"-bench-{time.time()}"
    if not overlap:
        p.caching.lookup.overlapped_get = None
    embedder = p.caching.lookup.classifier.embedder
    await p.arun("how do I freeze my card")
    stage, embed, cut = [], [], 0
    for i in range(n):
        t0 = time.perf_counter()
        embedder.embed_one(f"what does a transfer of {i} euros to account {n + i} cost")
        embed.append((time.perf_counter() - t0) * 1000)
        r = await p.arun(f"what does a transfer of {i} euros to account {i} cost")
        await p.caching.drain()
        record = next(s for s in r.stages if s.name == "cache")
        if record.outcome is not Outcome.OK:  # cut at its budget: not a whole miss
            cut += 1
        elif not r.cached:  # a paraphrase of an earlier question can hit the semantic cache
            stage.append(record.elapsed_ms)
    await p.caching.drain()
    await p.aclose()
    out = {"cache_stage": percentiles(stage), "embedding": percentiles(embed),
           "misses": len(stage), "cut": cut}
    out["ratio_p50"] = out["cache_stage"]["p50"] / out["embedding"]["p50"]
    return out


async def cache_under_load(concurrency: int, skip_when_slow: bool, n: int = 400,
                           overlap: bool = True) -> dict:
    """``n`` requests, ``concurrency`` at a time, Redis: every other one a question answered
    before (a hit to be had), the others new. No LLM listens, so every answer is the extractive
    one: the event loop is the bottleneck, as on a saturated server. ``skip_when_slow``:
    the cache skipped for its p95 as other stages are (how it ran before), against shipped;
    ``overlap``: False looks every key up before embedding (as ``cache_misses``)."""
    p = Pipeline(settings(redis_url=REDIS))
    p.version += f"-bench-{time.time()}"
    p.caching.lookup.skip_when_slow = skip_when_slow
    if not overlap:
        p.caching.lookup.overlapped_get = None
    await p.astart()
    known = ["how do I freeze my card", "what does an overdraft cost", "how do I reset my pin"]
    for q in known:
        await p.arun(q)
    await p.caching.drain()
    gate = asyncio.Semaphore(concurrency)
    hits, times, outcomes = 0, [], {o.value: 0 for o in Outcome}

    async def one(i: int) -> None:
        nonlocal hits
        q = known[i % 3] if i % 2 else f"what does a transfer of {i} euros to account {i} cost"
        async with gate:
            t0 = time.perf_counter()
            r = await p.arun(q)
            times.append((time.perf_counter() - t0) * 1000)
        outcomes[next(s for s in r.stages if s.name == "cache").outcome.value] += 1
        hits += bool(i % 2 and r.cached)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    await p.aclose()
    return {"repeated_answered_from_cache": hits / (n // 2), "requests_per_s": n / wall,
            "latency_ms": percentiles(times),
            "cache_stage": {k: v for k, v in outcomes.items() if v}}


async def features(n: int) -> dict:
    import redis.asyncio as aioredis

    out = {}
    for store in ("sqlite", "redis"):
        s = settings(redis_url=REDIS, features={"enabled": True, "online_store": store})
        materialize(s)
        stage = FeaturesStage(s)
        await stage.astart()
        ctx = RunContext(Deadline.after_ms(60_000), s)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await stage({"user_id": f"c-{i % 1000:04d}"}, ctx)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"feast-{store}"] = percentiles(times)
    r = aioredis.from_url(REDIS)
    for i in range(1000):
        await r.hset(f"bench:customer:c-{i:04d}", mapping={"tier": "premium", "ltv": 1.0})
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await r.hgetall(f"bench:customer:c-{i % 1000:04d}")
        times.append((time.perf_counter() - t0) * 1000)
    out["raw-redis-py-hgetall"] = percentiles(times)
    await r.aclose()
    return out


async def tools(n: int) -> dict:
    from ragpacer.agents.tool_runner import run_tools
    from tests.support.tools import Sleepy

    trio = [Sleepy("a", 0.05), Sleepy("b", 0.10), Sleepy("c", 0.15)]
    ratios = []
    for _ in range(n):
        t0 = time.perf_counter()
        await run_tools([(t, {}) for t in trio], Deadline.after_ms(5000))
        ratios.append((time.perf_counter() - t0) / 0.15)
    return percentiles(ratios)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--only", default="hits,misses,load,features,tools",
                    help="comma-separated parts to run")
    args = ap.parse_args()
    parts, n = set(args.only.split(",")), args.n
    out: dict = {}
    if "hits" in parts:
        out["cache_hit_ms_inprocess"] = asyncio.run(cache_hits(n, False))
        out["cache_hit_ms_redis"] = asyncio.run(cache_hits(n, True))
    if "misses" in parts:
        out["cache_miss_ms_inprocess"] = asyncio.run(cache_misses(n, False))
        out["cache_miss_ms_redis_looked_up_first"] = asyncio.run(cache_misses(n, True, False))
        out["cache_miss_ms_redis"] = asyncio.run(cache_misses(n, True))
        out["cache_miss_ms_inprocess_uvloop"] = uvloop.run(cache_misses(n, False))
        # A B B A: the lookup first, then overlapped with the embedding (shipped).
        for i, overlap in enumerate((False, True, True, False)):
            name = "cache_miss_ms_redis_uvloop" + ("" if overlap else "_looked_up_first")
            out[f"{name}_{i // 2}"] = uvloop.run(cache_misses(n, True, overlap))
    if "load" in parts:  # A B B A at each concurrency
        for c in (16, 64):
            for i, skip in enumerate((True, False, False, True)):
                name = f"cache_under_load_{c}_{'skipped_when_slow' if skip else 'shipped'}"
                out[f"{name}_{i // 2}"] = uvloop.run(cache_under_load(c, skip))
            for i, overlap in enumerate((False, True, True, False)):
                name = f"cache_under_load_{c}_{'overlapped' if overlap else 'looked_up_first'}"
                out[f"{name}_{i // 2}"] = uvloop.run(cache_under_load(c, False, overlap=overlap))
    if "features" in parts:
        out["feature_stage_ms"] = asyncio.run(features(n))
    if "tools" in parts:
        out["tools_total_over_slowest"] = asyncio.run(tools(50))
    for k, v in out.items():
        if k.startswith("cache_under_load"):
            lat = v["latency_ms"]
            print(f"{k:44} repeated questions from the cache "
                  f"{v['repeated_answered_from_cache']:.0%}, {v['requests_per_s']:.0f} req/s, "
                  f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} ms, cache stage {v['cache_stage']}")
        elif "ratio_p50" in v:
            print(f"{k:44} cache stage p50 {v['cache_stage']['p50']:.3f}, the embedding alone "
                  f"{v['embedding']['p50']:.3f}: {v['ratio_p50']:.2f}x ({v['misses']} misses; "
                  f"cut at its budget {v['cut']} times)")
        elif "p50" in v:
            print(f"{k:34} p50 {v['p50']:.3f} p95 {v['p95']:.3f} p99 {v['p99']:.3f}")
        else:
            for kk, vv in v.items():
                print(f"{k + ' ' + kk:34} p50 {vv['p50']:.3f} p95 {vv['p95']:.3f} "
                      f"p99 {vv['p99']:.3f}")
    print("saved", save("bench_cache_features_tools", out))


if __name__ == "__main__":
    main()

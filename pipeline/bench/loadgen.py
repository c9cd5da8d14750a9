"""The load generator behind `ragpacer bench`: open loop (Poisson arrivals) or closed loop
(fixed concurrency), through the SDK or the HTTP endpoint, with a query mix, a warm-up, a
progress bar and a JSON result (end-to-end and per-stage percentiles, throughput, breach and
fallback rates, errors, peak memory of the pipeline and of the LLM engine)."""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ragpacer.pipeline.bench.measure import group_rss_mb, percentiles

# (weight, query, user): cache hits repeat, simple intents use templates, RAG and tools.
DEFAULT_MIX: list[tuple[float, str, str | None]] = [
    (0.25, "how do I freeze my card", None),  # repeated: cache hits after the first
    (0.15, "hello", None),
    (0.10, "thanks, bye", None),
    (0.20, "what does an overdraft cost", None),
    (0.10, "I lost my card", None),
    (0.10, "how long does a SEPA transfer take", None),
    (0.10, "show my recent transactions", "c-0001"),
]


@dataclass
class Tally:
    e2e: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    by_route: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list))
    breaches: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fallbacks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    degraded: int = 0
    # Requests with a stage that fell back or was cut for time or failure; the grounding
    # check replacing an answer is a decision about the answer, not a lack of capacity.
    fell_back: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cached: int = 0

    def add(self, ms: float, info: dict[str, Any]) -> None:
        self.e2e.append(ms)
        self.cached += bool(info.get("cached"))
        self.degraded += bool(info.get("degraded"))
        self.fell_back += bool(set(info.get("degraded") or ()) - {"grounding"})
        for st in info.get("stages", []):
            self.stages[st["name"]].append(st["elapsed_ms"])
            self.by_route[(str(info.get("route")), st["name"])].append(st["elapsed_ms"])
            if st["outcome"] in ("timeout", "skipped"):
                self.breaches[st["name"]] += 1
            if st.get("fallback"):
                self.fallbacks[st["name"]] += 1


def pick(rng: random.Random, mix: list[tuple[float, str, str | None]]) -> tuple[str, str | None]:
    r, acc = rng.random() * sum(w for w, _, _ in mix), 0.0
    for w, q, u in mix:
        acc += w
        if r <= acc:
            return q, u
    return mix[-1][1], mix[-1][2]


class SdkTarget:
    def __init__(self, pipeline: Any, deadline_ms: float | None) -> None:
        self.pipeline, self.deadline_ms = pipeline, deadline_ms

    async def call(self, query: str, user: str | None) -> dict[str, Any]:
        r = await self.pipeline.arun(query, user_id=user, deadline_ms=self.deadline_ms)
        return r.as_dict()


class HttpTarget:
    def __init__(self, base_url: str, api_key: str | None, deadline_ms: float | None,
                 model: str = "ragpacer") -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60,
                                        limits=httpx.Limits(max_connections=256))
        self.deadline_ms = deadline_ms
        self.model = model

    async def call(self, query: str, user: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "user": user,
                                "messages": [{"role": "user", "content": query}]}
        if self.deadline_ms:
            body["deadline_ms"] = self.deadline_ms
        r = await self.client.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        return r.json()["ragpacer"]


async def run_load(target: Any, *, requests: int, concurrency: int | None = None,
                   rate: float | None = None, warmup: int = 20, seed: int = 0,
                   mix: list[tuple[float, str, str | None]] | None = None,
                   engine_pgid: int | None = None, progress: Any = None,
                   deadline_ms: float | None = None) -> dict[str, Any]:
    """Send ``requests`` after ``warmup``. With ``deadline_ms``, also report the share of
    answers later than the deadline + 50 ms (what budgets promise not to let happen)."""
    mix = mix or DEFAULT_MIX
    rng = random.Random(seed)
    for _ in range(warmup):
        await target.call(*pick(rng, mix))
    # A full collection walking everything imported so far would add its pause to whatever
    # request is in flight: the generator must not stall the latencies it measures.
    gc.collect()
    gc.freeze()
    tally, peak_engine = Tally(), 0.0

    lags: list[float] = []

    async def one(intended: float | None = None) -> None:
        """``intended``: when the schedule meant to send it. Latency counts from then, so a
        generator that falls behind shows its lag in the latencies, not a lower rate
        (no coordinated omission)."""
        nonlocal peak_engine
        q, u = pick(rng, mix)
        t0 = time.perf_counter()
        if intended is not None:
            lags.append((t0 - intended) * 1000)
            t0 = intended
        try:
            info = await target.call(q, u)
            tally.add((time.perf_counter() - t0) * 1000, info)
        except Exception as exc:
            tally.errors[f"{type(exc).__name__}: {exc}"[:80].rstrip(": ")] += 1
        if progress is not None:
            progress()
        if engine_pgid and rng.random() < 0.05:
            peak_engine = max(peak_engine, group_rss_mb(engine_pgid))

    t0 = time.perf_counter()
    if rate:  # open loop: arrivals on an absolute Poisson schedule, whatever the answers do
        tasks, at = [], t0
        for _ in range(requests):
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at)))
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    else:
        left = [requests]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await one()

        await asyncio.gather(*(worker() for _ in range(concurrency or 1)))
    wall = time.perf_counter() - t0
    n = len(tally.e2e)
    return {
        "mode": "open" if rate else "closed", "rate": rate, "concurrency": concurrency,
        # How late the generator sent against its schedule: large values mean the generator,
        # not the server, was overloaded (latencies include it either way).
        "send_lag_ms": percentiles(lags) if rate else None,
        "requests": requests, "answered": n, "throughput_rps": n / wall,
        "e2e_ms": percentiles(tally.e2e),
        "e2e_samples_ms": [round(ms, 2) for ms in tally.e2e],  # for CDF plots
        "stages_ms": {k: percentiles(v) for k, v in tally.stages.items()},
        "route_stages_ms": _by_route(tally.by_route),
        "breach_rate": {k: v / max(n, 1) for k, v in tally.breaches.items()},
        "fallback_rate": {k: v / max(n, 1) for k, v in tally.fallbacks.items()},
        "degraded_rate": tally.degraded / max(n, 1), "cache_hit_rate": tally.cached / max(n, 1),
        "fallback_answer_rate": tally.fell_back / max(n, 1),
        "errors": dict(tally.errors),
        "error_rate": sum(tally.errors.values()) / max(requests, 1),
        "late_rate": (sum(ms > deadline_ms + 50 for ms in tally.e2e) / max(n, 1)
                      if deadline_ms else None),
        "pipeline_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "engine_peak_rss_mb": peak_engine or None,
    }


async def sustainable_rate(target: Any, deadline_ms: float, *, start: float = 1.0,
                           max_rate: float = 512.0, seconds_per_step: float = 8.0,
                           late_target: float = 0.01, refine: int = 3, seed: int = 0,
                           max_degraded: float | None = None,
                           say: Any = None) -> dict[str, Any]:
    """The highest Poisson arrival rate at which at most ``late_target`` of the answers come
    later than the deadline + 50 ms and none fails (and, with ``max_degraded``, at most that
    share has a stage that fell back for time or failure: an LLM workload otherwise "holds"
    by answering extractively; the grounding check's replacements do not count): the rate
    doubles from ``start`` until a step misses, then ``refine`` bisections between the last
    rate that held and the first that did not. Each step sends ``seconds_per_step`` worth of
    requests (30 at least)."""
    steps: list[dict[str, Any]] = []

    async def holds(rate: float) -> bool:
        n = max(30, int(rate * seconds_per_step))
        r = await run_load(target, requests=n, rate=rate, warmup=0, seed=seed,
                           deadline_ms=deadline_ms)
        degraded = r.get("fallback_answer_rate", 0.0)
        ok = r["error_rate"] == 0 and (r["late_rate"] or 0.0) <= late_target and (
            max_degraded is None or degraded <= max_degraded)
        steps.append({"rate": rate, "requests": n, "late_rate": r["late_rate"],
                      "error_rate": r["error_rate"], "fallback_answer_rate": degraded,
                      "e2e_p50_ms": r["e2e_ms"].get("p50"),
                      "e2e_p99_ms": r["e2e_ms"].get("p99"), "held": ok})
        if say is not None:
            say(f"  {rate:7.2f}/s: late {r['late_rate'] or 0:.1%}, errors "
                f"{r['error_rate']:.1%}, fell back {degraded:.1%} -> "
                f"{'holds' if ok else 'misses'}")
        return ok

    good, bad = 0.0, None
    rate = start
    while rate <= max_rate:
        if not await holds(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    if bad is not None:
        for _ in range(refine):
            mid = (good + bad) / 2
            if await holds(mid):
                good = mid
            else:
                bad = mid
    return {"sustainable_rps": round(good, 2), "deadline_ms": deadline_ms,
            "late_target": late_target, "max_degraded": max_degraded, "steps": steps}


def _by_route(samples: dict[tuple[str, str], list[float]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for (route, stage), values in samples.items():
        out[route][stage] = percentiles(values)
    return dict(out)

"""What a rate-limited request pays the limiter, with Redis up, down, and none at all.

Rerun:  .venv/bin/python -m evals.bench_limiter [--requests 5000]

Down: Redis configured at a port where nothing listens. The first call fails (refused here; a
host that drops packets costs the 50 ms socket timeout) and opens the circuit breaker; what
follows is answered by the in-process bucket. The in-process bucket alone is the baseline,
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
import uuid

from evals.common import percentiles, save
from ragpacer.pipeline.serving.auth import RedisTokenBucket, TokenBucket


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _times(bucket: TokenBucket, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await bucket.take(f"caller-{i % 100}")
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


async def run(n: int) -> dict:
    down = RedisTokenBucket(f"redis://127.0.0.1:{_dead_port()}/0", 1000.0, 1000)
    first = (await _times(down, 1))[0]  # fails, opens the breaker
    rows = {"in-process bucket (baseline)": await _times(TokenBucket(1000.0, 1000), n),
            "redis down, breaker open": await _times(down, n)}
    up = RedisTokenBucket("redis://127.0.0.1:6379/0", 1000.0, 1000)
    try:
        await up._redis.ping()
        prefix = uuid.uuid4().hex[:8]
        rows["redis up"] = await _times(_Prefixed(up, prefix), n)
    except Exception:
        pass  # no Redis here: that row is left out
    out = {"requests": n, "first_call_redis_down_ms": round(first, 2),
           "rows": {k: percentiles(v) for k, v in rows.items()}}
    base = out["rows"]["in-process bucket (baseline)"]
    print(f"first call with Redis down: {first:.1f} ms (fails, opens the breaker)")
    print(f"{'ms per request':32} {'p50':>8} {'p95':>8} {'p99':>8}")
    for name, p in out["rows"].items():
        print(f"{name:32} {p['p50']:8.4f} {p['p95']:8.4f} {p['p99']:8.4f}"
              f"   x{p['p50'] / base['p50']:.1f} baseline at p50")
    await down._redis.aclose()
    await up._redis.aclose()
    return out


class _Prefixed(TokenBucket):
    def __init__(self, inner: RedisTokenBucket, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    async def take(self, who: str) -> float:
        return await self.inner.take(f"{self.prefix}-{who}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    out = asyncio.run(run(ap.parse_args().requests))
    print(f"saved {save('bench_limiter', out)}")


if __name__ == "__main__":
    main()

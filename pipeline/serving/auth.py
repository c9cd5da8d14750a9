"""API keys (hashed, compared in constant time) and per-key rate limits (token buckets)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import SecretStr

from ragpacer.pipeline.breaker import CircuitBreaker
from ragpacer.pipeline.serving.errors import APIError

log = logging.getLogger("ragpacer.http")

# Redis' own clock (TIME), not each server's: servers whose clocks disagree share one bucket.
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or now)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
tokens = math.min(burst, tokens + (now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tokens, 'l', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyStore:
    """Holds only SHA-256 digests; a presented key is hashed and compared against all."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._digests: list[bytes] = []
        for k in keys:
            raw = k.get_secret_value()
            self._digests.append(bytes.fromhex(raw[7:]) if raw.startswith("sha256:")
                                 else digest(raw))

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str:
        """The caller's key id (a digest prefix, safe to log), or a 401."""
        if not authorization or not authorization.startswith("Bearer "):
            raise APIError(401, "missing API key: send `Authorization: Bearer <key>`",
                           type="invalid_request_error", code="invalid_api_key")
        presented = digest(authorization[7:].strip())
        match = False
        for d in self._digests:  # no early exit: time does not depend on which key matched
            match |= hmac.compare_digest(presented, d)
        if not match:
            raise APIError(401, "invalid API key", type="invalid_request_error",
                           code="invalid_api_key")
        return presented.hex()[:12]


class TokenBucket:
    """In-process buckets, one per caller, the ``max_callers`` most recently seen kept (with
    auth off a caller is a client address: unbounded otherwise). A caller forgotten comes
    back with a full bucket, as one idle that long would have."""

    def __init__(self, rate_per_s: float, burst: int, max_callers: int = 10_000) -> None:
        self.rate, self.burst = rate_per_s, burst
        self.max_callers = max_callers
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    async def take(self, who: str) -> float:
        """0 when allowed; otherwise the seconds to wait."""
        now = time.monotonic()
        tokens, last = self._state.pop(who, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._state[who] = (tokens - 1 if tokens >= 1 else tokens, now)
        if len(self._state) > self.max_callers:
            self._state.popitem(last=False)  # the least recently seen
        return wait


class RedisTokenBucket(TokenBucket):
    """The same bucket in Redis (one Lua call), shared by every server process."""

    def __init__(self, url: str, rate_per_s: float, burst: int) -> None:
        super().__init__(rate_per_s, burst)
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_connect_timeout=0.05, socket_timeout=0.05)
        self._script = self._redis.register_script(_BUCKET_LUA)
        # Redis down: after the first failure, requests stop paying its 50 ms timeout.
        self.breaker = CircuitBreaker()

    async def connect(self) -> None:
        """Open a connection and load the script now (at start): a cold worker's first
        call would pay the connect and two more round trips, and a call over its 50 ms
        timeout opens the circuit, leaving each worker its own burst for a while."""
        try:
            await self._redis.script_load(_BUCKET_LUA)
        except Exception as exc:
            self.breaker.failure()
            log.warning("the rate limit starts without Redis (per process): %s", exc)

    async def take(self, who: str) -> float:
        if not self.breaker.allow():  # this process's own bucket meanwhile
            return await super().take(who)
        try:
            wait = await self._script(keys=[f"ragpacer:rl:{who}"],
                                      args=[self.rate, self.burst])
        except Exception:
            self.breaker.failure()
            return await super().take(who)
        except BaseException:  # cancelled (the client left): no failure of Redis's
            self.breaker.release()
            raise
        self.breaker.success()
        return float(wait)


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))

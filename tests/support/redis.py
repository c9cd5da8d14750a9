"""Whether the Redis server the tests use is up."""

from __future__ import annotations

REDIS = "redis://127.0.0.1:6379/0"


def redis_up(url: str = REDIS) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False

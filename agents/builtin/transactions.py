"""Recent transactions of a customer, kept in Redis (a sorted set scored by time).

Request-time data: what happened in the last hour is not in the nightly feature batch.
Without Redis configured, an in-process store with the same interface is used.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

from ragpacer.agents.tools import ToolArgumentError

# The longest window the tool reads (its window_minutes maximum): older transactions are
# dropped when a customer's next one is added, and a customer's key expires a day after
# their last one, so the store holds a day of payments, not all of them.
RETENTION_S = 1440 * 60


def tx_key(customer_id: str) -> str:
    return f"ragpacer:tx:{customer_id}"


def with_id(tx: dict[str, Any]) -> dict[str, Any]:
    """The transaction with an ``id`` (its own, or a new one). A sorted set keeps one of two
    equal members: without an id, the same payment charged twice would show once."""
    return tx if "id" in tx else {"id": uuid.uuid4().hex[:16], **tx}


class TransactionStore:
    """In-process fallback; the Redis layout is the same (member = JSON, score = epoch s)."""

    def __init__(self) -> None:
        self._data: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)

    async def add(self, customer_id: str, tx: dict[str, Any], at: float | None = None) -> None:
        now = time.time()
        held = [*self._data[customer_id], (at or now, with_id(tx))]
        self._data[customer_id] = [(ts, t) for ts, t in held if ts >= now - RETENTION_S]

    async def since(self, customer_id: str, since: float) -> list[dict[str, Any]]:
        return [tx for ts, tx in self._data.get(customer_id, []) if ts >= since]

    async def clear(self, customer_id: str) -> None:
        self._data.pop(customer_id, None)

    async def aclose(self) -> None:
        return None


class RedisTransactionStore:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_connect_timeout=0.1, socket_timeout=0.1)

    async def add(self, customer_id: str, tx: dict[str, Any], at: float | None = None) -> None:
        key, now = tx_key(customer_id), time.time()
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.zadd(key, {json.dumps(with_id(tx)): at or now})
            pipe.zremrangebyscore(key, "-inf", f"({now - RETENTION_S}")
            pipe.expire(key, RETENTION_S)
            await pipe.execute()

    async def since(self, customer_id: str, since: float) -> list[dict[str, Any]]:
        raw = await self._redis.zrangebyscore(tx_key(customer_id), since, "+inf")
        return [json.loads(r) for r in raw]

    async def clear(self, customer_id: str) -> None:
        await self._redis.delete(tx_key(customer_id))

    async def aclose(self) -> None:
        await self._redis.aclose()


class RecentTransactions:
    name: ClassVar[str] = "recent_transactions"
    description: ClassVar[str] = "The customer's card and account transactions of the last minutes."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "customer_id": {"type": "string", "maxLength": 128},
            "window_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
        },
        "required": ["customer_id"],
        "additionalProperties": False,
    }

    def __init__(self, store: TransactionStore | RedisTransactionStore,
                 timeout_s: float = 0.05) -> None:
        self.store = store
        self.timeout_s = timeout_s

    async def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        window = args.get("window_minutes", 60)
        txs = await self.store.since(args["customer_id"], time.time() - window * 60)
        return {"window_minutes": window, "count": len(txs),
                "total_eur": round(sum(float(t.get("amount_eur", 0)) for t in txs), 2),
                "latest": txs[-5:]}

    @staticmethod
    def describe(result: Mapping[str, Any]) -> str:
        """What the customer asked about their own activity, stated from the store: the count
        and total of the window, then the latest payments, newest first."""
        window = result["window_minutes"]
        if not result["count"]:
            return f"You have no transactions in the last {window} minutes."
        latest = "; ".join(_payment(tx) for tx in reversed(result["latest"]))
        plural = "s" if result["count"] > 1 else ""
        return (f"In the last {window} minutes you have {result['count']} transaction{plural}, "
                f"{_eur(result['total_eur'])} in all; the latest: {latest}.")

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not state.get("user_id"):
            raise ToolArgumentError("recent_transactions needs the customer id (`user`)")
        return {"customer_id": state["user_id"], "window_minutes": 60}


def _eur(amount: Any) -> str:
    return f"{float(amount):,.2f} EUR"


def _payment(tx: Mapping[str, Any]) -> str:
    where = str(tx.get("merchant") or tx.get("description") or "a payment")[:60]
    return f"{where} {_eur(tx.get('amount_eur', 0))}"

"""Tools: concurrency, timeouts, failures, argument validation, and the real Redis store."""

from __future__ import annotations

import asyncio
import time

import pytest

from ragpacer.agents.builtin.currency import CurrencyConvert
from ragpacer.agents.builtin.transactions import (
    RETENTION_S,
    RecentTransactions,
    RedisTransactionStore,
    TransactionStore,
    tx_key,
)
from ragpacer.agents.tool_runner import run_tools
from ragpacer.agents.tools import ToolArgumentError, openai_tool, validate_arguments
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.support.resources import RESOURCES
from tests.support.tools import Rendezvous, Sleepy


async def test_tools_run_concurrently() -> None:
    """Three tools that each wait for the other two: they answer only if they run at once."""
    barrier = asyncio.Barrier(3)
    tools = [Rendezvous(name, barrier) for name in ("a", "b", "c")]
    results = await run_tools([(t, {}) for t in tools], Deadline.after_ms(30_000))
    assert [(r.outcome, r.result) for r in results] == [("ok", "a"), ("ok", "b"), ("ok", "c")]


async def test_a_hanging_tool_is_cut_and_the_others_are_kept() -> None:
    tools = [
        Sleepy("fast", 0.01),
        Sleepy("hangs", 3600, timeout_s=0.1),
        Sleepy("boom", 0, fail=True),
    ]
    results = {
        r.name: r for r in await run_tools([(t, {}) for t in tools], Deadline.after_ms(5000))
    }
    assert results["fast"].outcome == "ok" and results["fast"].result == "fast"
    # Cut at its own timeout (never before it); the call returned, so it did not wait 3600 s.
    assert results["hangs"].outcome == "timeout" and results["hangs"].elapsed_ms >= 100
    assert results["boom"].outcome == "error" and "exploded" in results["boom"].error


async def test_the_request_deadline_caps_every_tool() -> None:
    (r,) = await run_tools([(Sleepy("slow", 3600, timeout_s=60), {})], Deadline.after_ms(100))
    assert r.outcome == "timeout"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"amount": 10, "from_currency": "EUR"}, r"must contain \['to_currency'\]"),
        ({"amount": "ten", "from_currency": "EUR", "to_currency": "USD"},
         "arguments.amount must be number"),
        ({"amount": 10, "from_currency": "EUR", "to_currency": "XXX"}, "must be one of"),
        ({"amount": -1, "from_currency": "EUR", "to_currency": "USD"},
         "bigger than or equal to 0"),
        ({"amount": 1, "from_currency": "EUR", "to_currency": "USD", "x": 1},
         r"must not contain \{'x'\}"),
        ([1, 2], "arguments must be object"),
    ],
)
def test_bad_arguments_from_a_model_are_rejected_clearly(args, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolArgumentError, match=match):
        validate_arguments(CurrencyConvert.parameters, args)


RICH = {
    "type": "object",
    "properties": {
        "iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"},
        "note": {"type": "string", "minLength": 3, "maxLength": 20},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "when": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string",
                                                               "format": "date"}]},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(("field", "bad", "good"), [
    ("iban", "not an iban", "BE68539007547034"),  # pattern
    ("note", "hi", "hello"),  # minLength
    ("note", "x" * 21, "x" * 20),  # maxLength
    ("tags", ["a", "c"], ["a", "b"]),  # items
    ("when", -1, "2026-12-01"),  # anyOf
    ("when", "someday", 5),  # anyOf with a format
])
def test_every_schema_keyword_is_enforced(field: str, bad: object, good: object) -> None:
    validate_arguments(RICH, {field: good})
    with pytest.raises(ToolArgumentError, match=f"arguments.{field}"):
        validate_arguments(RICH, {field: bad})


async def test_invalid_arguments_come_back_as_a_result_not_an_exception() -> None:
    (r,) = await run_tools([(CurrencyConvert(), {"amount": "x"})], Deadline.after_ms(1000))
    assert r.outcome == "invalid_arguments" and "from_currency" in r.error


async def test_currency_conversion_and_its_openai_schema() -> None:
    tool = CurrencyConvert()
    out = await tool({"amount": 100, "from_currency": "EUR", "to_currency": "USD"})
    assert out["result"] == 108.0
    assert tool.arguments_from({"query": "what is 250 GBP in EUR?"}) == {
        "amount": 250.0,
        "from_currency": "GBP",
        "to_currency": "EUR",
    }
    spec = openai_tool(tool)
    assert spec["type"] == "function" and spec["function"]["name"] == "currency_convert"


async def test_recent_transactions_from_real_redis() -> None:
    import redis

    try:
        redis.Redis(socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    store = RedisTransactionStore("redis://127.0.0.1:6379/0")
    customer = f"c-{time.time()}"
    await store.add(customer, {"amount_eur": 12.5, "merchant": "cafe"})
    await store.add(customer, {"amount_eur": 40, "merchant": "fuel"})
    await store.add(customer, {"amount_eur": 40, "merchant": "fuel"})  # charged twice
    await store.add(customer, {"amount_eur": 999, "merchant": "old"}, at=time.time() - 7200)
    out = await RecentTransactions(store)({"customer_id": customer, "window_minutes": 60})
    assert out["count"] == 3 and out["total_eur"] == 92.5
    # Kept for the tool's longest window (a day), not for ever: older ones go at the next add.
    await store.add(customer, {"amount_eur": 5, "merchant": "last year"},
                    at=time.time() - RETENTION_S - 60)
    await store.add(customer, {"amount_eur": 1, "merchant": "now"})
    day = await store.since(customer, 0)
    assert [t["merchant"] for t in day] == ["old", "cafe", "fuel", "fuel", "now"]
    ttl = redis.Redis().ttl(tx_key(customer))
    assert 0 < ttl <= RETENTION_S
    await store.clear(customer)
    await store.aclose()


async def test_the_in_process_store_keeps_a_day_of_transactions() -> None:
    store = TransactionStore()
    await store.add("c", {"merchant": "last year"}, at=time.time() - RETENTION_S - 60)
    await store.add("c", {"merchant": "this morning"}, at=time.time() - 3600)
    await store.add("c", {"merchant": "now"})
    assert [t["merchant"] for t in await store.since("c", 0)] == ["this morning", "now"]


async def test_a_route_with_tools_answers_and_names_failures(scripted) -> None:
    p = Pipeline(make_settings(scripted.url, redis_url="redis://127.0.0.1:6379/0"),
        resources=RESOURCES)
    ok = await p.arun("show my recent transactions", user_id="c-tools-1")
    assert ok.route == "account_activity" and "tools" not in ok.degraded
    prompt = scripted.requests[-1]["messages"][-1]["content"]
    assert '<tool name="recent_transactions">' in prompt
    anonymous = await p.arun("show my recent transactions")  # no customer id
    assert anonymous.answer and "tools" in anonymous.degraded
    await p.aclose()


def test_recent_transactions_are_stated_newest_first_with_their_total() -> None:
    describe = RecentTransactions.describe
    assert describe({"window_minutes": 60, "count": 0, "total_eur": 0, "latest": []}) == \
        "You have no transactions in the last 60 minutes."
    stated = describe({"window_minutes": 60, "count": 2, "total_eur": 1261.5, "latest": [
        {"merchant": "Hardware Store", "amount_eur": 1249},
        {"merchant": "Cafe", "amount_eur": 12.5}]})
    assert stated == ("In the last 60 minutes you have 2 transactions, 1,261.50 EUR in all; "
                      "the latest: Cafe 12.50 EUR; Hardware Store 1,249.00 EUR.")


async def test_a_tool_whose_describe_fails_still_returns_its_result() -> None:
    class Described(CurrencyConvert):
        def describe(self, result: dict[str, object]) -> str:
            if result["to"] == "USD":
                raise KeyError("rate")
            return f"That is {result['result']} {result['to']}."

    tool = Described()
    args = {"amount": 100, "from_currency": "EUR", "to_currency": "USD"}
    broken, fine = await run_tools(
        [(tool, args), (tool, {**args, "to_currency": "EUR"})], Deadline.after_ms(1000))
    assert broken.outcome == "ok" and broken.result["result"] == 108.0
    assert broken.statement is None
    assert fine.statement == "That is 100.0 EUR."


async def test_a_personal_question_is_answered_from_the_customers_own_data(scripted) -> None:
    """Answered without the LLM (the shipped extractive path), the customer's transactions
    are stated; help-centre sentences that only share words with the question are not quoted
    beside them, and without a customer id the question is declined, not answered with them."""
    p = Pipeline(make_settings(scripted.url, answer=None), resources=RESOURCES)
    store = p.stages["tools"].registry.get("recent_transactions").store
    customer = f"c-{time.time_ns()}"
    await store.add(customer, {"merchant": "Grocer", "amount_eur": 42.5})
    await store.add(customer, {"merchant": "Cafe", "amount_eur": 3.2})
    mine = await p.arun("How much did I spend in the last hour?", user_id=customer)
    assert mine.route == "account_activity" and mine.answer_kind == "extractive"
    assert mine.answer == ("In the last 60 minutes you have 2 transactions, 45.70 EUR in all; "
                           "the latest: Cafe 3.20 EUR; Grocer 42.50 EUR.")
    assert [t["name"] for t in mine.tool_results] == ["recent_transactions"]
    anonymous = await p.arun("How much did I spend in the last hour?")
    assert anonymous.route == "account_activity" and "tools" in anonymous.degraded
    assert anonymous.answer_kind == "decline" and anonymous.decline == "no_evidence"
    # No tool holds a balance: neither the transactions nor an article sharing the word
    # ("Current accounts earn 0.5% a year on balances ...") answers it, so it is declined.
    for question in ("What is my account balance right now?", "What is my account balance?"):
        balance = await p.arun(question, user_id=customer)
        assert balance.route == "balance" and not balance.tool_results and not balance.sources
        assert balance.answer_kind == "decline" and balance.decline == "no_evidence"
    await p.aclose()


def tool_route(**route):  # type: ignore[no-untyped-def]
    return {
        "routes": {
            "fees": {
                "stages": ["retrieval"],
                "filters": {"doc_type": "fees"},
                "llm_tools": ["currency_convert"],
                **route,
            }
        }
    }


async def test_the_model_may_call_tools_in_a_bounded_loop() -> None:
    from tests.scripted_llm import Script, ScriptedLLM

    call = {
        "name": "currency_convert",
        "arguments": '{"amount": 100, "from_currency": "EUR", "to_currency": "USD"}',
    }
    with ScriptedLLM(Script(tool_call=call)) as llm:
        p = Pipeline(make_settings(llm.url, routing=tool_route()), resources=RESOURCES)
        result = await p.arun("what does an overdraft cost")
        first, second = llm.requests
        assert first["tools"][0]["function"]["name"] == "currency_convert"
        tool_msg = next(m for m in second["messages"] if m["role"] == "tool")
        assert '"result": 108.0' in tool_msg["content"]
        assert result.answer == "Freeze your card now. [1]"
        await p.aclose()


async def test_bad_arguments_from_the_model_are_rejected_and_reported_back() -> None:
    from tests.scripted_llm import Script, ScriptedLLM

    call = {
        "name": "currency_convert",
        "arguments": '{"amount": "lots", "from_currency": "EUR", "to_currency": "USD"}',
    }
    with ScriptedLLM(Script(tool_call=call)) as llm:
        p = Pipeline(make_settings(llm.url, routing=tool_route(max_tool_rounds=1)),
            resources=RESOURCES)
        result = await p.arun("what does an overdraft cost")
        tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
        assert "amount must be number" in tool_msg["content"]
        assert "tools" not in llm.requests[1], "the last round offers no more tools"
        assert result.answer
        await p.aclose()


async def test_http_service_tool_calls_a_real_loopback_service() -> None:
    from ragpacer.agents.builtin.http_service import HttpServiceTool
    from tests.loopback import json_peer

    with json_peer(lambda path, headers: {"path": path, "status": "active"}) as base:
        tool = HttpServiceTool(f"{base}/accounts")
        (r,) = await run_tools([(tool, tool.arguments_from({"user_id": "c-7"}))],
                               Deadline.after_ms(2000))
    assert r.outcome == "ok" and r.result == {"path": "/accounts?customer_id=c-7",
                                              "status": "active"}
    down = HttpServiceTool("http://127.0.0.1:9/accounts")
    (r,) = await run_tools([(down, {"customer_id": "c-7"})], Deadline.after_ms(2000))
    assert r.outcome == "error"
    await tool.client.aclose()
    await down.client.aclose()

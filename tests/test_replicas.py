"""LLM replicas (``llm.models[].urls``): least in flight first, a failing replica ejected and
probed back, failover only while the deadline leaves room; per-replica figures."""

from __future__ import annotations

import asyncio
import time

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import free_port
from tests.support.resources import RESOURCES

MESSAGES = [{"role": "user", "content": "hi"}]


def model_with(urls: list[str]):  # type: ignore[no-untyped-def]
    settings = make_settings(urls[0], llm={"models": [
        {"name": "smollm2", "url": urls[0], "urls": urls, "decode_tokens_per_s": 50,
         "ttft_ms": 20}]})
    return settings.llm.model("smollm2")


async def test_calls_go_to_the_least_busy_replica() -> None:
    slow = Script(token_delay_s=0.05)
    with ScriptedLLM(slow) as a, ScriptedLLM(slow) as b:
        model = model_with([a.url, b.url])
        client = LLMClient()
        calls = [client.complete(model, MESSAGES, deadline=Deadline.after_ms(5000))
                 for _ in range(8)]
        done = await asyncio.gather(*calls)
        await client.aclose()
    assert len(a.requests) == 4 and len(b.requests) == 4
    assert {c.replica for c in done} == {a.url, b.url} and all(not c.failed_over for c in done)


async def test_a_dead_replica_is_ejected_then_probed_back() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ScriptedLLM(Script()) as live:
        model = model_with([dead, live.url])
        client = LLMClient()
        replicas = client.replicas(model)
        answers = [await client.complete(model, MESSAGES, deadline=Deadline.after_ms(3000))
                   for _ in range(6)]
        down = replicas.replicas[0]
        assert all(c.replica == live.url and c.text for c in answers)
        # Tried once, then skipped while ejected: not once per call.
        assert down.calls == 1 and down.failures == 1 and not down.breaker.available()
        assert answers[0].failed_over == [dead] or answers[1].failed_over == [dead]
        down.breaker._open_until = time.monotonic()  # the ejection ends: one probe goes there
        probed = await client.complete(model, MESSAGES, deadline=Deadline.after_ms(3000))
        assert probed.replica == live.url and probed.failed_over == [dead]
        assert down.calls == 2 and down.failures == 2
        await client.aclose()


async def test_a_restarted_replica_is_readmitted_when_it_answers_not_after_its_backoff() -> None:
    """An engine that went down and came back up takes calls again once its model list
    answers, not after the rest of its breaker's backoff (up to 30 s)."""
    port = free_port()
    with ScriptedLLM(Script()) as live:
        model = model_with([f"http://127.0.0.1:{port}/v1", live.url])
        client = LLMClient()
        down = client.replicas(model).replicas[0]
        for _ in range(30):  # each probe fails: the backoff doubles to its 30 s ceiling
            if down.failures == 6:
                break
            down.breaker._open_until = time.monotonic()
            await client.complete(model, MESSAGES, deadline=Deadline.after_ms(3000))
        assert down.failures == 6 and down.breaker.retry_in_s() > 20
        with ScriptedLLM(Script(), port=port) as restarted:
            for _ in range(100):  # polled once a second
                if down.breaker.closed:
                    break
                await asyncio.sleep(0.1)
            assert down.breaker.closed and down.readmitted == 1 and restarted.model_lists
            answers = [await client.complete(model, MESSAGES, deadline=Deadline.after_ms(3000))
                       for _ in range(4)]
        await client.aclose()
    assert {c.replica for c in answers} == {down.url, live.url}
    assert len(restarted.requests) == 2


async def test_a_replica_listing_its_models_but_failing_calls_stays_ejected() -> None:
    with ScriptedLLM(Script(status=503)) as broken, ScriptedLLM(Script()) as live:
        model = model_with([broken.url, live.url])
        client = LLMClient()
        client.replicas(model)._turn = len(model.endpoints) - 1  # the failing one goes first
        await client.complete(model, MESSAGES, deadline=Deadline.after_ms(3000))
        down = client.replicas(model).replicas[0]
        broken.script.status = 200  # its model list now answers; calls would too
        await asyncio.sleep(2.5)  # two polls
        assert not down.breaker.closed and down.readmitted == 0, "never seen down by a poll"
        await client.aclose()


async def test_a_replica_answering_5xx_is_ejected_and_the_result_names_the_failover() -> None:
    with ScriptedLLM(Script(status=503)) as broken, ScriptedLLM(Script()) as live:
        p = Pipeline(make_settings(live.url, cache={"enabled": False}, llm={"models": [
            {"name": "smollm2", "url": live.url, "urls": [broken.url, live.url],
             "decode_tokens_per_s": 50, "ttft_ms": 20}]}), resources=RESOURCES)
        results = [await p.arun("what does an overdraft cost") for _ in range(3)]
        await p.aclose()
    assert all(r.answer_kind == "llm" and r.llm_call["replica"] == live.url for r in results)
    assert len(broken.requests) == 1, "ejected after its first 503"
    assert [r.llm_call["failed_over"] for r in results].count([broken.url]) == 1
    metrics = p.metrics.render().decode()
    assert f'ragpacer_llm_replica_failovers_total{{model="smollm2",replica="{broken.url}"}} 1.0' \
        in metrics
    assert f'ragpacer_llm_replica_calls_total{{model="smollm2",replica="{live.url}"}} 3.0' \
        in metrics


async def test_no_failover_when_the_deadline_leaves_no_useful_answer() -> None:
    # The first replica takes 150 ms to fail; 300 ms with a 100 ms TTFT allows 10 tokens
    # before it, 2 after: no second attempt.
    with ScriptedLLM(Script(status=503, ttft_s=0.15)) as slow_fail, ScriptedLLM() as live:
        model = model_with([slow_fail.url, live.url])
        client = LLMClient()
        client.replicas(model)._turn = len(model.endpoints) - 1  # the failing one goes first
        client.rates(model).ttft_ms = 100.0
        failed: Exception | None = None
        try:
            await client.complete(model, MESSAGES, deadline=Deadline.after_ms(300))
        except Exception as exc:
            failed = exc
        await client.aclose()
    assert type(failed).__name__ == "LLMUnavailable"
    assert len(slow_fail.requests) == 1 and live.requests == []


async def test_a_call_beyond_max_in_flight_falls_back_at_once() -> None:
    # One call may be held per replica; the engine takes 0.5 s to its first token. Of two
    # questions asked together, one waits for the LLM, the other is answered from the sources
    # without queueing behind it (the engine never sees it), and says why.
    with ScriptedLLM(Script(ttft_s=0.5)) as slow:
        p = Pipeline(make_settings(slow.url, cache={"enabled": False}, llm={"models": [
            {"name": "smollm2", "url": slow.url, "decode_tokens_per_s": 50, "ttft_ms": 20,
             "max_in_flight": 1}]}), resources=RESOURCES)
        question = "What does an international transfer cost?"
        first, second = await asyncio.gather(p.arun(question), p.arun(question))
        metrics = p.metrics.render().decode()
        await p.aclose()
    assert len(slow.requests) == 1
    assert sorted([first.answer_kind, second.answer_kind]) == ["extractive", "llm"]
    refused = first if first.answer_kind == "extractive" else second
    record = next(s for s in refused.stages if s.name == "generation")
    assert refused.answer and record.outcome == "degraded" and "calls in flight" in record.detail
    assert 'ragpacer_llm_busy_refusals_total{model="smollm2"} 1.0' in metrics

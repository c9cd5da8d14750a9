"""Budget logic end to end against a scripted OpenAI-compatible server on loopback."""

import time

import pytest

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.stage import Outcome
from ragpacer.pipeline.llm.client import (
    CUT_MARGIN_S,
    MAX_CUT_LAG_S,
    PROBE_AFTER_S,
    Completion,
    LLMClient,
)
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.resources import RESOURCES

QUESTION = "what does an overdraft cost"  # fees route: retrieval then the LLM


def gen_record(result):  # type: ignore[no-untyped-def]
    return next(r for r in result.stages if r.name == "generation")


async def test_answer_streams_from_the_llm_with_sources(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url)
    result = await p.arun(QUESTION)
    assert result.answer == "Freeze your card now. [1]"
    assert result.answer_kind == "llm" and result.model == "smollm2"
    assert result.sources and not result.degraded and not result.truncated
    assert result.usage == {"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46}
    body = scripted.requests[0]
    assert body["stream"] is True and body["model"] == "smollm2"
    assert 0 < body["max_tokens"] <= 200


async def test_max_tokens_shrinks_with_the_remaining_budget(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url)
    await p.arun(QUESTION, deadline_ms=5000)
    await p.arun("what does a paper statement cost", deadline_ms=700)
    roomy, tight = (r["max_tokens"] for r in scripted.requests)
    # (time left for the stage - expected TTFT) * measured tokens/s, capped at max_tokens.
    assert tight < roomy <= 200


async def test_slow_first_token_is_cut_and_falls_back_to_extractive() -> None:
    with ScriptedLLM(Script(ttft_s=10.0)) as server:
        p = Pipeline(make_settings(server.url), resources=RESOURCES)
        result = await p.arun(QUESTION, deadline_ms=600)
        rec = gen_record(result)
        assert rec.outcome in (Outcome.TIMEOUT, Outcome.ERROR)
        assert rec.fallback == "cheaper" and result.answer_kind == "extractive"
        assert "generation" in result.degraded and result.answer
        # The end-to-end deadline held: far below the server's 10 s first token.
        assert result.elapsed_ms < 3000
        assert server.wait_for_disconnect(), "the server must see the request abandoned"
        await p.aclose()


async def test_after_cuts_with_no_token_a_short_deadline_skips_the_llm_at_once() -> None:
    """A saturated engine shows itself only by cuts before any token. The client learns that
    the first token takes at least that long, so a request left with less time answers
    extractively at once instead of trying, being cut and answering extractively late."""
    with ScriptedLLM(Script(ttft_s=10.0)) as server:
        p = Pipeline(make_settings(server.url), resources=RESOURCES)
        await p.arun(QUESTION, deadline_ms=1500)
        tried = len(server.requests)
        assert tried == 1
        # At the configured first guess (20 ms TTFT, 50 tokens/s) 400 ms leaves room for
        # 8+ tokens; at the learned one (over 250 ms) it does not.
        result = await p.arun("what does a paper statement cost", deadline_ms=400)
        assert len(server.requests) == tried, "the engine must not be tried"
        rec = gen_record(result)
        assert result.answer_kind == "extractive" and rec.fallback == "cheaper"
        assert rec.outcome is Outcome.TIMEOUT and "generation" in result.degraded
        await p.aclose()


async def test_the_learned_ttft_lets_a_probe_through_and_comes_back_down() -> None:
    model = make_settings("http://127.0.0.1:9/v1").llm.models[0]
    client = LLMClient()
    r = client.rates(model)
    r.no_first_token(2000.0)
    assert r.ttft_ms > 300 and client.max_tokens_for(model, Deadline.after_ms(400)) == 0
    r.no_first_token(10.0)  # a lower bound under the estimate says nothing new
    high = r.ttft_ms
    assert high > 300
    # No call for a while: the next one is let through at the configured first guess ...
    r.last_call -= PROBE_AFTER_S + 0.1
    assert client.max_tokens_for(model, Deadline.after_ms(400)) >= 8
    # ... and a fast first token (even of a short answer) pulls the estimate back down.
    r.last_call += PROBE_AFTER_S + 0.1
    r.update(Completion(model.name, "ok", "stop", False, 15.0, 40.0, 3))
    assert r.ttft_ms < high
    await client.aclose()


async def test_stream_cut_at_deadline_returns_partial_text_marked_truncated() -> None:
    script = Script(tokens=[f"word{i}. " for i in range(400)], token_delay_s=0.01)
    with ScriptedLLM(script) as server:
        p = Pipeline(make_settings(server.url, llm={"models": [
            {"name": "smollm2", "url": server.url, "max_tokens": 400,
             "decode_tokens_per_s": 1000, "ttft_ms": 5}]}), resources=RESOURCES)
        result = await p.arun(QUESTION, deadline_ms=800)
        assert result.truncated and result.answer.startswith("word0. word1.")
        assert len(result.answer.split()) < 400
        rec = gen_record(result)
        assert rec.outcome is Outcome.DEGRADED and "truncated" in (rec.detail or "")
        assert "generation" in result.degraded
        assert server.wait_for_disconnect(), "closing the stream must reach the server"
        assert server.completed == 0
        await p.aclose()


async def test_llm_down_falls_back_and_says_so(make_pipeline) -> None:
    p = make_pipeline("http://127.0.0.1:9/v1")
    result = await p.arun(QUESTION)
    rec = gen_record(result)
    assert rec.outcome is Outcome.ERROR and "ConnectError" in (rec.detail or "")
    assert result.answer_kind == "extractive" and "[1]" in result.answer


async def test_model_fallback_chain_uses_the_next_model(scripted) -> None:
    p = Pipeline(make_settings(scripted.url, llm={"default_model": "big", "models": [
        {"name": "big", "url": "http://127.0.0.1:9/v1", "fallback": "smollm2"},
        {"name": "smollm2", "url": scripted.url}]}), resources=RESOURCES)
    result = await p.arun(QUESTION)
    assert result.model == "smollm2" and result.answer_kind == "llm"
    assert "generation" in result.degraded  # visibly degraded: the first choice was down
    await p.aclose()


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_fall_back(status: int) -> None:
    with ScriptedLLM(Script(status=status)) as server:
        p = Pipeline(make_settings(server.url), resources=RESOURCES)
        result = await p.arun(QUESTION)
        assert result.answer_kind == "extractive" and "generation" in result.degraded
        await p.aclose()


async def test_astream_yields_text_then_the_result(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url)
    chunks = [c async for c in p.astream(QUESTION)]
    *texts, final = chunks
    assert "".join(texts) == final.answer == "Freeze your card now. [1]"
    assert final.answer_kind == "llm"


async def test_sync_run_works_outside_an_event_loop(scripted) -> None:
    import asyncio

    p = Pipeline(make_settings(scripted.url), resources=RESOURCES)

    def call():  # type: ignore[no-untyped-def]
        return p.run(QUESTION), p.run(QUESTION)

    first, second = await asyncio.to_thread(call)
    assert first.answer == "Freeze your card now. [1]"
    assert second.cached and second.answer == first.answer  # same loop, same pooled client
    with pytest.raises(RuntimeError, match="arun"):
        p.run(QUESTION)
    await asyncio.to_thread(p.close)


async def test_the_llm_client_aims_its_cut_earlier_by_how_late_cuts_land() -> None:
    """On a busy loop a cut lands late (measured 25-60 ms): the client learns to aim earlier,
    fast when cuts land later than it aims, slowly back when they land on time."""
    client = LLMClient()
    assert client.cut_lag_s == CUT_MARGIN_S
    client._learn_cut_lag(0.040)
    assert client.cut_lag_s > 0.02
    high = client.cut_lag_s
    client._learn_cut_lag(0.0)
    assert 0.9 * high < client.cut_lag_s < high
    for _ in range(50):
        client._learn_cut_lag(5.0)
    assert client.cut_lag_s == MAX_CUT_LAG_S  # a pathological stall cannot eat the budget
    await client.aclose()


def test_a_deadline_can_run_from_an_earlier_arrival() -> None:
    arrived = time.monotonic() - 0.4
    assert Deadline.after_ms(1000, since=arrived).remaining_ms() <= 600

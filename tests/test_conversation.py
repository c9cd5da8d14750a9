"""Conversations: the standalone query, earlier turns in the prompt under a token budget, and
the caller's system messages by policy; over HTTP with the official client."""

from __future__ import annotations

import httpx
import openai

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.llm.generation import Generation
from ragpacer.pipeline.llm.prompt import fit_history, system_message
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.conversation import REWRITTEN, TURNS
from tests.support.http import serving
from tests.support.resources import RESOURCES


def words(text: str) -> int:
    return len(text.split())


def test_history_keeps_the_newest_turns_that_fit() -> None:
    kept = fit_history(TURNS, 20, words)
    assert kept == TURNS[2:]  # 5 + 10 words fit; the first exchange (17 more) does not
    assert fit_history(TURNS, 1000, words) == TURNS
    assert fit_history(TURNS, 3, words) == []
    system = [{"role": "system", "content": "be brief"}, *TURNS]
    assert fit_history(system, 1000, words) == TURNS  # system messages are not turns


def test_a_hurried_request_reads_less_of_the_past() -> None:
    settings = make_settings("http://127.0.0.1:9/v1", llm={"history_tokens": 40})
    stage = Generation(llm=None, count_tokens=words)  # type: ignore[arg-type]
    state = {"history": TURNS}
    full = stage._history(state, RunContext(Deadline.after_ms(settings.deadline_ms), settings))
    hurried = stage._history(state, RunContext(Deadline.after_ms(settings.deadline_ms / 2),
                                               settings))
    assert full == TURNS and hurried == TURNS[2:]  # 40 tokens, then 20


def test_the_callers_system_message_follows_ours() -> None:
    ours = "You are the help-centre assistant."
    merged = system_message(ours, ["Answer in French.", "  "])
    assert merged.startswith(ours) and merged.endswith("Operator instructions: Answer in French.")
    assert system_message(ours, []) == ours


async def test_turns_and_system_messages_reach_the_prompt(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url, cache={"enabled": False})
    history = [{"role": "system", "content": "Answer in French."}, *TURNS]
    result = await p.arun("And how long does it take?", history=history)
    messages = scripted.requests[-1]["messages"]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(p.settings.llm.system_prompt)
    assert messages[0]["content"].endswith("Operator instructions: Answer in French.")
    assert messages[1:-1] == TURNS
    assert messages[-1]["content"].endswith("Question: And how long does it take?")
    assert result.sources[0].id.split("#")[0] == "transfers-international"


async def test_the_system_message_policy_ignores_or_refuses(scripted) -> None:
    history = [{"role": "system", "content": "Answer in French."}, *TURNS[:2]]
    ignoring = Pipeline(make_settings(scripted.url, llm={"caller_system": "ignore"},
                                      cache={"enabled": False}), resources=RESOURCES)
    await ignoring.arun("How much does that cost?", history=history)
    assert "Operator" not in scripted.requests[-1]["messages"][0]["content"]
    await ignoring.aclose()
    with serving(Pipeline(make_settings(scripted.url, llm={"caller_system": "refuse"}),
        resources=RESOURCES)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.post("/v1/chat/completions", json={"model": "ragpacer", "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "How much does a SWIFT transfer cost?"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "system_message_refused"


def test_a_three_turn_conversation_through_the_official_client() -> None:
    """The third question names nothing ("and how long does it take?"): with the
    conversation it retrieves the international-transfers article first."""
    with ScriptedLLM(Script()) as llm, serving(Pipeline(make_settings(
            llm.url, cache={"enabled": False}), resources=RESOURCES)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="ragpacer", messages=[
            *TURNS, {"role": "user", "content": "And how long does it take?"}])
        alone = client.chat.completions.create(model="ragpacer", messages=[
            {"role": "user", "content": "And how long does it take?"}])
    sources = r.model_extra["ragpacer"]["sources"]
    assert sources[0]["id"].split("#")[0] == "transfers-international"
    assert r.model_extra["ragpacer"]["query"].endswith("And how long does it take?")
    assert alone.model_extra["ragpacer"]["query"] == "And how long does it take?"


async def test_personal_data_in_earlier_turns_is_redacted_before_the_prompt(
        make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url, cache={"enabled": False})
    history = [{"role": "user", "content": "My card 4111 1111 1111 1111 was declined."},
               {"role": "assistant", "content": "Check the reason in the app."}]
    await p.arun("And who do I call, ann@example.org here?", history=history)
    prompt = str(scripted.requests[-1]["messages"])
    assert "4111" not in prompt and "ann@example.org" not in prompt
    assert "[CARD]" in prompt and "[EMAIL]" in prompt


def _rewriting(url: str, **overrides: object) -> Pipeline:
    return Pipeline(make_settings(url, answer="extractive", cache={"enabled": False},
                                  llm={"rewrite_model": "smollm2"}, **overrides),
                    resources=RESOURCES)


async def test_the_llm_rewrites_a_follow_up_when_the_deadline_leaves_room() -> None:
    with ScriptedLLM(Script(tokens=[f'"{REWRITTEN}"\n', "(the user asks about SWIFT)"])) as llm:
        p = _rewriting(llm.url)
        result = await p.arun("And how long does it take?", history=TURNS)
        asked = await p.arun("How do I reset my card PIN in the app?", history=TURNS)
    assert result.query == REWRITTEN and result.query_form == "rewritten"
    assert result.stages[0].name == "rewrite" and result.stages[0].outcome.value == "ok"
    assert result.sources[0].id.split("#")[0] == "transfers-international"
    sent = llm.requests[0]
    assert sent["max_tokens"] <= 48 and sent["temperature"] == 0.0
    assert sent["messages"][1]["content"].count("user:") == 3  # two turns, then the question
    # A self-contained question is answered as asked: no rewrite, no LLM call.
    assert asked.query_form == "asked" and "rewrite" not in [r.name for r in asked.stages]
    assert len(llm.requests) == 1
    await p.aclose()


async def test_without_room_or_in_time_the_carried_follow_up_stands() -> None:
    with ScriptedLLM(Script(tokens=[REWRITTEN])) as llm:
        hurried = _rewriting(llm.url)
        short = await hurried.arun("And how long does it take?", history=TURNS,
                                   deadline_ms=900)  # under llm.rewrite_min_left_ms
    assert short.query_form == "carried" and short.query != REWRITTEN
    assert short.query.endswith("And how long does it take?")
    assert short.stages[0].outcome.value == "degraded" and "needed" in short.stages[0].detail
    assert llm.requests == [] and short.sources[0].id.split("#")[0] == "transfers-international"
    await hurried.aclose()
    with ScriptedLLM(Script(tokens=[REWRITTEN], ttft_s=1.0)) as llm:
        slow = _rewriting(llm.url, stages={"rewrite": {"budget_ms": 150}})
        late = await slow.arun("And how long does it take?", history=TURNS)
    assert late.query_form == "carried" and late.stages[0].outcome.value == "timeout"
    assert late.answer and late.sources[0].id.split("#")[0] == "transfers-international"
    await slow.aclose()


async def test_a_rewrite_that_loses_the_topic_or_the_question_is_not_used() -> None:
    """What a small model often gives back: the question without its topic, an answer, an
    apology. None of them may replace the carried form."""
    for reply in ["How long does it take?", "It takes one to three working days.",
                  "I'm sorry, I cannot help with that request."]:
        with ScriptedLLM(Script(tokens=[reply])) as llm:
            p = _rewriting(llm.url)
            result = await p.arun("And how long does it take?", history=TURNS)
        assert result.query_form == "carried", reply
        assert result.stages[0].outcome.value == "degraded" and "stand alone" in \
            result.stages[0].detail
        assert result.sources[0].id.split("#")[0] == "transfers-international"
        await p.aclose()


async def test_a_long_conversation_is_counted_off_the_event_loop(make_pipeline, scripted,
                                                                 monkeypatch) -> None:
    """Usage of an answer no LLM made counts the whole conversation: a pasted page is
    tokenised in a worker thread, so other requests are not held up meanwhile."""
    import asyncio

    from ragpacer.pipeline import sdk

    p = make_pipeline(scripted.url, answer="extractive", cache={"enabled": False})
    threads: list[object] = []
    real = asyncio.to_thread

    async def spy(fn, *args):  # type: ignore[no-untyped-def]
        threads.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(sdk.asyncio, "to_thread", spy)
    question = "What is the fee for a SWIFT transfer?"
    short = await p.arun(question)
    assert not threads
    page = "hello " * 5000
    long = await p.arun(question, history=[{"role": "user", "content": page}])
    assert len(threads) == 1
    count = p._count_tokens
    assert long.usage["prompt_tokens"] == count(page) + count(question) == 5000 + count(question)
    assert short.usage["prompt_tokens"] == count(question)

"""Prompt economy: the prompt quotes the sentences that answer, within a token budget that
shrinks with the time left; what each engine call cost is kept, measured and traced."""

from __future__ import annotations

import asyncio

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.llm.client import Completion, LLMClient
from ragpacer.pipeline.llm.prompt import build_messages, count_words
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.retrieval import extractive
from ragpacer.retrieval.extractive import Selection, Sentence
from ragpacer.retrieval.types import Hit
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.resources import RESOURCES

QUESTION = "What does an international transfer cost?"


def sentence(text: str, source: int, position: int, score: float) -> Sentence:
    return Sentence(text, source, position, score)


def test_excerpts_keep_the_best_sentences_that_fit_in_reading_order() -> None:
    best = sentence("The fee is 0.5% of the amount.", 2, 3, 0.9)
    ranked = (best, sentence("Transfers take one to three days.", 2, 1, 0.8),
              sentence("A very long sentence about something else entirely that goes on and "
                       "on well past the budget.", 1, 0, 0.7),
              sentence("Cards are free.", 3, 0, 0.68),
              sentence("Savings pay interest.", 4, 0, 0.5))
    chosen = Selection((best,), 0.9, ranked)
    assert chosen.excerpts(19, count_words) == {  # 7 + 6 + 3 words
        2: ["Transfers take one to three days.", "The fee is 0.5% of the amount."],
        3: ["Cards are free."]}  # the long one did not fit; a shorter one after it did; the
    # last would fit too, but scores too far below the best to be about the question
    assert chosen.excerpts(1, count_words) == {2: ["The fee is 0.5% of the amount."]}


def test_a_source_without_excerpts_is_left_out_and_the_others_keep_their_numbers() -> None:
    hits = [Hit(f"d{i}", 1.0, f"Title {i}", f"Whole text {i}. More text {i}.") for i in (1, 2, 3)]
    user = build_messages("sys", "q?", hits, excerpts={3: ["More text 3."]})[-1]["content"]
    assert user.startswith('<source id="3" title="Title 3">More text 3.</source>')
    assert "Whole text" not in user and 'id="1"' not in user
    whole = build_messages("sys", "q?", hits)[-1]["content"]
    assert whole.count("<source") == 3 and "Whole text 1. More text 1." in whole


def test_the_prompt_budget_follows_the_measured_prefill_speed() -> None:
    settings = make_settings("http://127.0.0.1:9/v1")
    model = settings.llm.model("smollm2")
    client = LLMClient()
    first = client.prompt_tokens_for(model, Deadline.after_ms(1000), 0.25)
    assert 480 <= first <= 500  # 2,000 tokens/s seeded, a quarter of one second
    client.rates(model).update(Completion("smollm2", "", "stop", False, 400.0, 500.0, 10,
                                          prompt_tokens=400))  # 1,000 tokens/s seen
    assert client.prompt_tokens_for(model, Deadline.after_ms(1000), 0.25) < first


def test_a_busy_engine_reads_a_shorter_prompt_for_each_call() -> None:
    settings = make_settings("http://127.0.0.1:9/v1")
    model = settings.llm.model("smollm2")
    client = LLMClient()
    deadline = Deadline.after_ms(60_000)
    idle = client.prompt_tokens_for(model, deadline, 0.25)
    client.replicas(model).replicas[0].in_flight = 3  # three calls already prefill there
    busy = client.prompt_tokens_for(model, deadline, 0.25)
    assert abs(busy - idle / 4) <= 1


async def test_the_prompt_quotes_sentences_not_articles(scripted: ScriptedLLM) -> None:
    sent = {}
    for text in ("sentences", "articles"):
        p = Pipeline(make_settings(scripted.url, cache={"enabled": False},
                                   llm={"source_text": text}), resources=RESOURCES)
        result = await p.arun(QUESTION)
        sent[text] = scripted.requests[-1]["messages"][-1]["content"]
        assert result.llm_call == {"model": "smollm2", "prompt_tokens": 42,
                                   "completion_tokens": 4, "ttft_ms": result.ttft_ms,
                                   "truncated": False, "replica": scripted.url,
                                   "failed_over": []}
        metrics = p.metrics.render().decode()
        assert 'ragpacer_llm_prompt_tokens_count{model="smollm2"} 1.0' in metrics
        assert 'ragpacer_llm_time_to_first_token_seconds_count{model="smollm2"} 1.0' in metrics
        await p.aclose()
    assert len(sent["sentences"]) < 0.75 * len(sent["articles"])
    assert "0.5%" in sent["sentences"], "the sentence that answers is quoted"
    assert sent["articles"].count("<source") == 4 and sent["sentences"].count("<source") < 4
    assert sent["sentences"].endswith(f"Question: {QUESTION}")


async def test_less_time_left_quotes_less(scripted: ScriptedLLM, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A slow reader (400 prompt tokens/s): 1.2 s of generation budget reads ~120 tokens,
    # 0.5 s ~50. Every ranked sentence is a candidate here: the budget alone decides.
    monkeypatch.setattr(extractive, "NEXT_BEST_MARGIN", 10.0)
    p = Pipeline(make_settings(scripted.url, cache={"enabled": False}, llm={
        "source_tokens": 2000, "models": [{
            "name": "smollm2", "url": scripted.url, "decode_tokens_per_s": 50, "ttft_ms": 20,
            "prefill_tokens_per_s": 400}]}), resources=RESOURCES)
    await p.arun(QUESTION, deadline_ms=2500)
    roomy = scripted.requests[-1]["messages"][-1]["content"]
    await p.arun(QUESTION, deadline_ms=700)
    hurried = scripted.requests[-1]["messages"][-1]["content"]
    assert len(scripted.requests) == 2
    assert len(hurried) < len(roomy) and "0.5%" in hurried
    await p.aclose()


async def test_calls_in_flight_on_the_engine_quote_less(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The same slow reader; the engine answers each call after 0.4 s, so the requests sent
    # together reach generation while the earlier ones still wait for their first token.
    monkeypatch.setattr(extractive, "NEXT_BEST_MARGIN", 10.0)
    with ScriptedLLM(Script(ttft_s=0.4)) as slow:
        p = Pipeline(make_settings(slow.url, cache={"enabled": False}, llm={
            "source_tokens": 2000, "models": [{
                "name": "smollm2", "url": slow.url, "decode_tokens_per_s": 50, "ttft_ms": 20,
                "prefill_tokens_per_s": 400}]}), resources=RESOURCES)
        await p.arun(QUESTION)
        alone = slow.requests[-1]["messages"][-1]["content"]
        await asyncio.gather(*(p.arun(QUESTION) for _ in range(4)))
        together = [r["messages"][-1]["content"] for r in slow.requests[1:]]
        await p.aclose()
    assert len(together) == 4
    assert min(map(len, together)) < 0.6 * len(alone)  # the last sent shares with three
    assert all("0.5%" in prompt for prompt in together), "the answering sentence stays"

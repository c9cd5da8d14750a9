"""OpenAI parameters are honoured or refused with a 400 naming them, never silently ignored;
the official openai client is the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from ragpacer.pipeline.core.context import AnswerOptions
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.settings import ModelSettings
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import serving
from tests.support.resources import RESOURCES

QUESTION = "What is the fee for a SWIFT transfer?"


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    tokens = ["The fee is 0.5% of the amount. ", "The minimum is 5 EUR. ", "[1]"]
    with ScriptedLLM(Script(tokens=tokens)) as server:
        yield server


@pytest.fixture(scope="module")
def clients(llm: ScriptedLLM) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    """(LLM answers, extractive answers), cache off so every call is answered afresh."""
    urls = []
    with serving(Pipeline(make_settings(llm.url, answer="llm", cache={"enabled": False}),
        resources=RESOURCES)) \
            as a, serving(Pipeline(make_settings(llm.url, answer="extractive",
                                                 cache={"enabled": False}),
                                                     resources=RESOURCES)) as b:
        urls = [a, b]
        yield tuple(openai.OpenAI(base_url=f"{u}/v1", api_key="x") for u in urls)  # type: ignore[misc]


def ask(client: openai.OpenAI, **params: Any) -> Any:
    return client.chat.completions.create(
        model="ragpacer", messages=[{"role": "user", "content": QUESTION}], **params)


@pytest.mark.parametrize(("params", "name"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
])
def test_unsupported_parameters_are_refused_with_their_name(clients, params, name) -> None:
    for client in clients:
        with pytest.raises(openai.BadRequestError) as err:
            ask(client, **params)
        body = err.value.body
        assert body["code"] == "unsupported_parameter" and body["param"] == name, body


def test_a_message_part_other_than_text_is_refused_not_dropped(clients) -> None:
    """A question with a screenshot must not be answered as if the image were not there."""
    content = [{"type": "text", "text": "what is this charge?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}}]
    with pytest.raises(openai.BadRequestError) as err:
        clients[1].chat.completions.create(
            model="ragpacer", messages=[{"role": "user", "content": content}])
    body = err.value.body
    assert body["code"] == "unsupported_parameter" and body["param"] == "messages[0].content"
    assert "'image_url'" in body["message"]
    text_only = clients[1].chat.completions.create(model="ragpacer", messages=[
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    assert text_only.choices[0].message.content  # text parts are read as before


def test_sampling_parameters_reach_the_llm(clients, llm: ScriptedLLM) -> None:
    llm.requests.clear()
    ask(clients[0], temperature=0.7, top_p=0.9, seed=7, stop=["###"], max_tokens=64)
    body = llm.requests[-1]
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        0.7, 0.9, 7, ["###"])
    assert body["max_tokens"] <= 64


def test_max_tokens_is_the_smaller_of_the_callers_and_the_budgets(clients, llm) -> None:
    llm.requests.clear()
    ask(clients[0], max_tokens=5)
    assert llm.requests[-1]["max_tokens"] == 5
    ask(clients[0], max_completion_tokens=100_000)
    assert 5 < llm.requests[-1]["max_tokens"] < 100_000  # the budget's own, smaller


def test_an_extractive_answer_keeps_whole_sentences_within_max_tokens(clients) -> None:
    full = ask(clients[1])
    short = ask(clients[1], max_tokens=12)
    assert full.choices[0].finish_reason == "stop"
    assert len(full.choices[0].message.content.split()) > 12
    text = short.choices[0].message.content
    assert short.choices[0].finish_reason == "length" and 0 < len(text.split()) <= 12


def test_stop_cuts_an_extractive_answer_at_the_sequence(clients) -> None:
    full = ask(clients[1]).choices[0].message.content
    word = full.split()[3]
    cut = ask(clients[1], stop=[word]).choices[0]
    assert cut.message.content == full[: full.index(word)].rstrip()
    assert cut.finish_reason == "stop"


async def test_a_models_extra_body_goes_with_every_call_and_the_caller_wins(
        llm: ScriptedLLM) -> None:
    model = ModelSettings(name="smollm2", url=llm.url,
                          extra_body={"repetition_penalty": 1.1, "top_p": 0.5})
    client = LLMClient()
    llm.requests.clear()
    try:
        await client.complete(model, [{"role": "user", "content": QUESTION}],
                              deadline=Deadline.after_ms(5000), options=AnswerOptions(top_p=0.9))
    finally:
        await client.aclose()
    body = llm.requests[-1]
    assert (body["repetition_penalty"], body["top_p"]) == (1.1, 0.9)


def test_extra_body_may_not_set_what_each_call_sets() -> None:
    with pytest.raises(ValueError, match=r"extra_body may not set \['max_tokens', 'stream'\]"):
        ModelSettings(name="m", extra_body={"max_tokens": 9000, "stream": False, "min_p": 0.1})

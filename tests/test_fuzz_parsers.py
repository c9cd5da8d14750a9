"""Property tests on everything that parses outside input: the config loader (file and
environment), the chat request parser and the ingestion parsers. Each either accepts the input
or raises its own typed error naming the problem; nothing else may escape."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragpacer.pipeline.core.errors import ConfigError, CorpusError, InputError
from ragpacer.pipeline.core.settings import Settings, load_settings
from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving.protocol import ChatCompletionRequest
from ragpacer.retrieval.ingest import read_documents
from tests.conftest import ROOT, make_settings
from tests.support.resources import RESOURCES

# CI's size; RAGPACER_FUZZ_EXAMPLES=5000 for a long run outside CI.
EXAMPLES = int(os.environ.get("RAGPACER_FUZZ_EXAMPLES", "150"))
KEYS = ["deadline_ms", "max_deadline_ms", "stages", "routing", "llm", "guardrails", "cache",
        "retrieval", "tracing", "tools", "features", "server", "budget_ms", "fallback",
        "reserve_ms", "routes", "intents", "models", "url", "mode", "enabled", "exporter",
        "generation", "intent", "rag", "stages", "name", "min_confidence", "x"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12),
                    st.floats(allow_nan=True), st.text(max_size=12),
                    st.sampled_from(["skip", "default", "cheaper", "fail", "bm25", "fusion",
                                     "otlp", "jsonl", "managed", "external", "-1", "1e400"]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=12)


def _accepts_or_config_error(**kwargs: Any) -> None:
    try:
        assert isinstance(load_settings(**kwargs), Settings)
    except ConfigError as exc:
        assert str(exc), "a ConfigError must say what is wrong"


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200),
                 st.dictionaries(st.sampled_from(KEYS), TREES, max_size=5).map(yaml.safe_dump)))
def test_config_file_is_accepted_or_rejected_with_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ragpacer.yaml"
        path.write_text(text, encoding="utf-8")
        _accepts_or_config_error(path=path, environ={})


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(
        lambda parts: "RAGPACER_" + "__".join(p.upper() for p in parts)),
    st.text(max_size=20), max_size=4))
def test_environment_overrides_are_accepted_or_rejected_with_a_config_error(env: dict) -> None:
    _accepts_or_config_error(path=ROOT / "ragpacer.yaml", environ=env)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(make_settings("http://127.0.0.1:9/v1", retrieval={"mode": "bm25"},
                                  routing={"classifier": "lexical"}), resources=RESOURCES)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                              st.text(max_size=30)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=8), inner,
                                                            max_size=3)), max_leaves=10)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]),
     "content": st.one_of(st.text(max_size=60), JSON,
                          st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "x"]),
                                                          "text": st.text(max_size=20)})))})
REQUEST = st.fixed_dictionaries(
    {"model": st.one_of(st.just("ragpacer"), JSON), "messages": st.lists(MESSAGE, max_size=3)},
    optional={"stream": JSON, "max_tokens": JSON, "temperature": JSON, "user": JSON,
              "metadata": st.one_of(JSON, st.dictionaries(
                  st.sampled_from(["product", "doc_type", "department", "colour"]), JSON)),
              "deadline_ms": st.one_of(JSON, st.floats(), st.integers())})


@settings(max_examples=EXAMPLES * 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(REQUEST)
def test_request_parser_accepts_or_raises_a_typed_error(pipeline: Pipeline, body: dict) -> None:
    try:
        call = ChatCompletionRequest.model_validate_json(json.dumps(body)).to_call()
        pipeline.check_input(call["query"], call["filters"], call["deadline_ms"])
    except (ValidationError, InputError) as exc:
        assert str(exc)


LINES = st.one_of(
    st.text(max_size=80),
    JSON.map(json.dumps),
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=40), JSON)},
                          optional={"id": JSON, "title": JSON, "metadata": JSON}).map(json.dumps))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(LINES, max_size=6), st.text(max_size=300), st.binary(max_size=200))
def test_ingest_parsers_accept_or_raise_a_corpus_error(lines: list[str], markdown: str,
                                                       raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a.jsonl").write_text("\n".join(lines), encoding="utf-8")
        (folder / "b.md").write_text(markdown, encoding="utf-8")
        (folder / "c.txt").write_bytes(raw)
        for path in (folder / "a.jsonl", folder / "b.md", folder / "c.txt", folder):
            try:
                docs = read_documents(path)
            except CorpusError as exc:
                assert str(path.name) in str(exc) or str(folder) in str(exc), exc
                continue
            assert all(isinstance(d.text, str) and d.id for d in docs)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(st.text(max_size=30).map(lambda s: "RAGPACER_" + s),
                       st.text(max_size=20), max_size=4))
def test_any_environment_names_and_values_never_crash_the_loader(env: dict) -> None:
    _accepts_or_config_error(path=ROOT / "ragpacer.yaml", environ=env)

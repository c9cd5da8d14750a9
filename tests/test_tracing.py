"""Spans as a local OTLP/HTTP receiver decodes them; a dead or hanging collector costs nothing."""

from __future__ import annotations

import asyncio
import socket
import time

from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.conversation import REWRITTEN, TURNS
from tests.support.http import free_port
from tests.support.otlp import Receiver
from tests.support.resources import RESOURCES

QUESTION = "what does an overdraft cost"


def attrs(span) -> dict:  # type: ignore[no-untyped-def,type-arg]
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = (v.string_value or v.int_value or v.double_value or v.bool_value
                       if v.WhichOneof("value") != "array_value" else
                       [x.string_value for x in v.array_value.values])
    return out


async def test_spans_parentage_and_attributes(scripted) -> None:
    rx = Receiver()
    p = Pipeline(make_settings(scripted.url, tracing={
        "exporter": "otlp", "endpoint": f"http://127.0.0.1:{rx.port}/v1/traces"}),
            resources=RESOURCES)
    result = await p.arun(QUESTION)
    await p.aclose()  # flushes
    spans = rx.spans()
    root = next(s for s in spans if s.name == "ragpacer.request")
    stages = [s for s in spans if s.name.startswith("stage.")]
    assert [s.name for s in stages] == [f"stage.{r.name}" for r in result.stages]
    assert root.trace_id.hex() == result.trace_id
    for s in stages:
        assert s.parent_span_id == root.span_id and s.trace_id == root.trace_id
        a = attrs(s)
        assert {"budget_ms", "elapsed_ms", "slack_ms", "outcome", "fallback"} <= set(a)
        assert root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano
    gen = attrs(next(s for s in stages if s.name == "stage.generation"))
    assert gen["langfuse.observation.type"] == "generation"
    assert gen["gen_ai.request.model"] == "smollm2" and gen["gen_ai.usage.output_tokens"] == 4
    assert "langfuse.observation.completion_start_time" in gen
    assert attrs(next(s for s in stages if s.name == "stage.intent"))["intent"]
    # Nothing of the user's text leaves the process in a span.
    assert "overdraft" not in str([attrs(s) for s in spans])
    rx.server.shutdown()


async def test_a_rewritten_follow_up_is_on_the_span_only_when_asked_for() -> None:
    seen = {}
    for capture in (False, True):
        rx = Receiver()
        with ScriptedLLM(Script(tokens=[REWRITTEN])) as llm:
            p = Pipeline(make_settings(llm.url, answer="extractive", cache={"enabled": False},
                                       llm={"rewrite_model": "smollm2"}, tracing={
                "exporter": "otlp", "endpoint": f"http://127.0.0.1:{rx.port}/v1/traces",
                "capture_queries": capture}), resources=RESOURCES)
            result = await p.arun("And how long does it take?", history=TURNS)
            await p.aclose()
        root = attrs(next(s for s in rx.spans() if s.name == "ragpacer.request"))
        seen[capture] = root
        assert result.query_form == "rewritten" and root["ragpacer.query_form"] == "rewritten"
        assert any(s.name == "stage.rewrite" for s in rx.spans())
        rx.server.shutdown()
    assert seen[True]["ragpacer.query"] == REWRITTEN
    assert "ragpacer.query" not in seen[False]


async def test_a_callers_traceparent_round_trips_into_the_exported_spans(scripted) -> None:
    rx = Receiver()
    p = Pipeline(make_settings(scripted.url, tracing={
        "exporter": "otlp", "endpoint": f"http://127.0.0.1:{rx.port}/v1/traces"}),
            resources=RESOURCES)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    result = await p.arun(QUESTION, traceparent=caller)
    alone = await p.arun(QUESTION, traceparent="not a traceparent")
    await p.aclose()
    roots = {s.trace_id.hex(): s for s in rx.spans() if s.name == "ragpacer.request"}
    root = roots["0af7651916cd43dd8448eb211c80319c"]
    assert result.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert root.parent_span_id.hex() == "b7ad6b7169203331"  # a child of the caller's span
    assert root.span_id.hex() == result.span_id
    fresh = roots[alone.trace_id]  # an invalid header starts a trace of its own
    assert not fresh.parent_span_id and alone.trace_id != result.trace_id
    rx.server.shutdown()


async def test_langfuse_export_goes_to_its_public_otlp_path_with_basic_auth(scripted) -> None:
    rx = Receiver()
    p = Pipeline(make_settings(scripted.url, tracing={"exporter": "langfuse"}, langfuse={
        "host": f"http://127.0.0.1:{rx.port}", "public_key": "pk-lf-1", "secret_key": "sk-lf-2"}),
            resources=RESOURCES)
    result = await p.arun(QUESTION)
    await p.aclose()
    path, headers, _ = rx.requests[0]
    names = {s.name for s in rx.spans()}
    assert "ragpacer.request" in names and "stage.retrieval" in names, names
    assert {s.trace_id.hex() for s in rx.spans()} == {result.trace_id}
    assert path == "/api/public/otel/v1/traces"
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["authorization"] == "Basic cGstbGYtMTpzay1sZi0y"  # pk-lf-1:sk-lf-2
    rx.server.shutdown()


def hanging_server() -> tuple[socket.socket, int]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


async def _median_latency(p: Pipeline, n: int = 30) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await p.arun(f"{QUESTION} {i}")
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2]


async def test_dead_or_hanging_collector_costs_no_latency(scripted) -> None:
    sock, hang_port = hanging_server()
    base = Pipeline(make_settings(scripted.url, cache={"enabled": False}), resources=RESOURCES)
    baseline = await _median_latency(base)
    dead = {"host": f"http://127.0.0.1:{free_port()}", "public_key": "pk", "secret_key": "sk"}
    configs = [
        {"tracing": {"exporter": "otlp", "export_timeout_s": 1,
                     "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"}},
        {"tracing": {"exporter": "otlp", "export_timeout_s": 1,
                     "endpoint": f"http://127.0.0.1:{hang_port}/v1/traces"}},
        {"tracing": {"exporter": "langfuse", "export_timeout_s": 1}, "langfuse": dead},
    ]
    for extra in configs:
        p = Pipeline(make_settings(scripted.url, cache={"enabled": False}, **extra),
            resources=RESOURCES)
        traced = await _median_latency(p)
        assert traced < baseline * 3 + 0.005, (extra, baseline, traced)
        t0 = time.monotonic()
        await p.aclose()
        assert time.monotonic() - t0 < 10, "shutdown must flush within a bounded time"
    await base.aclose()
    sock.close()
    await asyncio.sleep(0)

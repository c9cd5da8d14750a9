"""Spans as a local OTLP/HTTP receiver decodes them; a dead or hanging collector costs nothing."""

from __future__ import annotations

import asyncio
import socket
import threading

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
    # The evidence bar's input, for reviewing declines and weak answers in Langfuse.
    assert result.evidence is not None
    assert attrs(root)["ragpacer.evidence"] == result.evidence
    # Nothing of the user's text leaves the process in a span.
    assert "overdraft" not in str([attrs(s) for s in spans])
    rx.server.shutdown()


async def test_a_message_answered_in_part_says_how_many_questions_on_its_spans(scripted) -> None:
    rx = Receiver()
    p = Pipeline(make_settings(scripted.url, answer="extractive", cache={"enabled": False},
                               tracing={"exporter": "otlp",
                                        "endpoint": f"http://127.0.0.1:{rx.port}/v1/traces"}),
                 resources=RESOURCES)
    result = await p.arun("Do you sell gift cards and what is the contactless limit?")
    await p.aclose()  # flushes
    spans = {s.name: attrs(s) for s in rx.spans()}
    rx.server.shutdown()
    assert result.unanswered == ["Do you sell gift cards"]
    assert spans["stage.retrieval"]["ragpacer.questions"] == 2
    assert spans["stage.generation"]["ragpacer.unanswered"] == 1
    assert "gift" not in str(spans)  # counts, never the customer's words


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


class HangingCollector:
    """Accepts OTLP connections, reads what comes, never answers; counts the connections the
    exporter still holds open (it closes one when its export times out)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.accepted = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with self._lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self.sock.close()


async def test_a_request_never_waits_for_a_hanging_collector(scripted) -> None:
    """Export runs beside the requests: one answered while an export hangs leaves that export
    still hanging (an export on the request path would have had to end first)."""
    collector = HangingCollector()
    p = Pipeline(make_settings(scripted.url, cache={"enabled": False}, tracing={
        "exporter": "otlp", "export_timeout_s": 30,
        "endpoint": f"http://127.0.0.1:{collector.port}/v1/traces"}), resources=RESOURCES)
    baseline = Pipeline(make_settings(scripted.url, cache={"enabled": False}),
                        resources=RESOURCES)
    await p.arun(QUESTION)
    for _ in range(600):  # the batch processor exports within its 0.5 s schedule
        if collector.open:
            break
        await asyncio.sleep(0.05)
    assert collector.open, "no export reached the collector"
    hanging = collector.accepted
    result = await p.arun(f"{QUESTION} today")
    assert collector.open and collector.accepted == hanging, "the request waited for the export"
    expected = await baseline.arun(f"{QUESTION} today")
    assert (result.answer, result.degraded) == (expected.answer, expected.degraded)
    # Shutdown gives up on the hanging export instead of waiting for it (a hang guard only).
    await asyncio.wait_for(p.aclose(), 120)
    await baseline.aclose()
    collector.close()


async def test_a_dead_collector_changes_no_answer(scripted) -> None:
    dead = {"host": f"http://127.0.0.1:{free_port()}", "public_key": "pk", "secret_key": "sk"}
    baseline = Pipeline(make_settings(scripted.url, cache={"enabled": False}),
                        resources=RESOURCES)
    for extra in (
        {"tracing": {"exporter": "otlp", "export_timeout_s": 1,
                     "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"}},
        {"tracing": {"exporter": "langfuse", "export_timeout_s": 1}, "langfuse": dead},
    ):
        p = Pipeline(make_settings(scripted.url, cache={"enabled": False}, **extra),
                     resources=RESOURCES)
        for i in range(5):
            got, want = await p.arun(f"{QUESTION} {i}"), await baseline.arun(f"{QUESTION} {i}")
            assert (got.answer, got.degraded) == (want.answer, want.degraded), extra
        await asyncio.wait_for(p.aclose(), 120)  # a hang guard, not a speed claim
    await baseline.aclose()

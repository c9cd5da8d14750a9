"""Trace review from the JSONL sink: summaries, waterfalls, the CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ragpacer.pipeline.cli import app
from ragpacer.pipeline.observe import traces as tr
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.support.resources import RESOURCES


async def test_jsonl_sink_round_trip_and_summary(scripted, tmp_path: Path) -> None:
    sink = tmp_path / "traces.jsonl"
    p = Pipeline(
        make_settings(scripted.url, tracing={"exporter": "jsonl", "jsonl_path": str(sink)}),
            resources=RESOURCES
    )
    results = [
        await p.arun(q)
        for q in ("what does an overdraft cost", "hello", "how do I reset my password")
    ]
    await p.aclose()
    spans = tr.read_jsonl(sink)
    assert {s["trace_id"] for s in spans} == {r.trace_id for r in results}
    rows = tr.stage_rows(spans)
    summary = {r["stage"]: r for r in tr.summary(rows)}
    assert summary["intent"]["n"] == 3 and summary["retrieval"]["n"] == 2
    assert summary["generation"]["p50_ms"] <= summary["generation"]["p99_ms"]
    (root, stages), *_ = tr.slowest(spans, 1)
    assert root["name"] == "ragpacer.request" and stages[0]["stage"] == "cache"
    assert all(s["offset_ms"] >= 0 for s in stages)
    with sink.open("a") as f:
        f.write('{"cut by a crash"')
    assert len(tr.read_jsonl(sink)) == len(spans)

    out = CliRunner().invoke(app, ["traces", "--path", str(sink), "--slow", "1"])
    assert out.exit_code == 0, out.output
    assert "p99 ms" in out.output and "generation" in out.output


def test_reading_traces_from_langfuse_public_api() -> None:
    from tests.loopback import json_peer

    seen: list[str] = []

    def observations(path: str, headers: dict[str, str]) -> dict:
        seen.append(headers.get("authorization", headers.get("Authorization", "")))
        return {"data": [
            {"id": "s1", "traceId": "t1", "parentObservationId": None,
             "name": "ragpacer.request", "metadata": {}},
            {"id": "s2", "traceId": "t1", "parentObservationId": "s1", "name": "stage.retrieval",
             "metadata": {"attributes": {"elapsed_ms": 0.5, "budget_ms": 100, "outcome": "ok",
                                         "fallback": ""}}}]}

    with json_peer(observations) as base:
        spans = tr.read_langfuse(base, "pk", "sk")
    assert seen[0].startswith("Basic ")
    (row,) = tr.summary(tr.stage_rows(spans))
    assert row["stage"] == "retrieval" and row["p50_ms"] == 0.5


def test_offsets_come_from_the_spans_given_not_an_earlier_call() -> None:
    """Root starts were once cached by the list's id(); a new list at a reused address got
    the offsets of a trace read before."""
    from ragpacer.pipeline.observe.traces import stage_rows

    def spans(root_ns: int) -> list[dict]:
        return [{"trace_id": "t", "span_id": "r", "parent_id": None, "name": "ragpacer.request",
                 "start_ns": root_ns, "attributes": {}},
                {"trace_id": "t", "span_id": "s", "parent_id": "r", "name": "stage.intent",
                 "start_ns": 5_000_000, "attributes": {"elapsed_ms": 1.0}}]

    for root_ns in (0, 2_000_000, 4_000_000):  # each list freed before the next is made
        assert stage_rows(spans(root_ns))[0]["offset_ms"] == (5_000_000 - root_ns) / 1e6

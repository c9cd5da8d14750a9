"""Tracing: one OpenTelemetry span per stage under one span per request.

Spans are built from the stage records when a request ends (the runner already measured
everything), with the request's own trace id, and handed to a BatchSpanProcessor: export runs
in a background thread with a short timeout, so a dead collector costs a log line, not
latency. Attributes carry numbers and labels, never the answer text, nor the query unless
``tracing.capture_queries`` asks for it (redacted); the generation span uses the
gen_ai/langfuse attribute names so Langfuse shows it as a generation.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from base64 import b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.result import Result

log = logging.getLogger("ragpacer.tracing")
_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("ragpacer_trace_id",
                                                                       default=None)
_ROOT_SPAN_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("ragpacer_span_id",
                                                                          default=None)


class _RequestIds(RandomIdGenerator):
    """A request's spans carry the trace id its Result reports, and its root span the span id
    (the one its ``traceparent`` response header and the LLM request name)."""

    def generate_trace_id(self) -> int:
        return _TRACE_ID.get() or super().generate_trace_id()

    def generate_span_id(self) -> int:
        return _ROOT_SPAN_ID.get() or super().generate_span_id()


class JsonlExporter(SpanExporter):
    """Appends one JSON object per span to a local file (`ragpacer traces` reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_dict(s), separators=(",", ":")) for s in spans]
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def span_dict(s: ReadableSpan) -> dict[str, Any]:
    ctx = s.get_span_context()
    assert ctx is not None  # a recorded span always has its context
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
        "name": s.name,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
        "attributes": dict(s.attributes or {}),
    }


def _exporter(settings: Settings) -> SpanExporter | None:
    cfg = settings.tracing
    if cfg.exporter == "none":
        return None
    if cfg.exporter == "jsonl":
        return JsonlExporter(cfg.jsonl_path or settings.home / "traces.jsonl")
    # otlp and langfuse: the exporter is only imported when configured.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if cfg.exporter == "langfuse":
        # Langfuse's public OTLP endpoint, authenticated with the project's key pair.
        lf = settings.langfuse
        if not (lf.host and lf.public_key and lf.secret_key):
            raise ValueError("tracing.exporter langfuse needs langfuse.host, public_key and "
                             "secret_key")
        pair = f"{lf.public_key}:{lf.secret_key.get_secret_value()}".encode()
        return OTLPSpanExporter(endpoint=f"{lf.host.rstrip('/')}/api/public/otel/v1/traces",
                                headers={"Authorization": f"Basic {b64encode(pair).decode()}"},
                                timeout=cfg.export_timeout_s)
    return OTLPSpanExporter(endpoint=cfg.endpoint, timeout=cfg.export_timeout_s)


def _processor(settings: Settings) -> Any:
    """A batch processor in a background thread: export never runs on the request path."""
    cfg = settings.tracing
    exporter = _exporter(settings)
    if exporter is None:
        return None
    return BatchSpanProcessor(exporter, schedule_delay_millis=500,
                              export_timeout_millis=int(cfg.export_timeout_s * 1000))


class Tracing:
    def __init__(self, settings: Settings) -> None:
        cfg = settings.tracing
        processor = _processor(settings)
        self.capture_queries = cfg.capture_queries
        self.provider: TracerProvider | None = None
        if processor is None:
            return
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_rate)),
            id_generator=_RequestIds(),
        )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("ragpacer")

    def record(self, result: Result, start_ns: int) -> None:
        """Turn a finished request's records into spans; never raises."""
        if self.provider is None:
            return
        try:
            self._record(result, start_ns)
        except Exception:
            log.exception("tracing failed; the request is unaffected")

    def _record(self, result: Result, start_ns: int) -> None:
        token = _TRACE_ID.set(int(result.trace_id, 16))
        span_token = _ROOT_SPAN_ID.set(int(result.span_id, 16) if result.span_id else None)
        try:
            root = self.tracer.start_span(
                "ragpacer.request", kind=SpanKind.SERVER, start_time=start_ns,
                context=_caller(result),
                attributes=_drop_none({
                    "ragpacer.route": result.route, "ragpacer.intent": result.intent,
                    "ragpacer.intent_confidence": result.intent_confidence,
                    "ragpacer.evidence": result.evidence,
                    "ragpacer.cache_hit": result.cached,
                    "ragpacer.degraded": ",".join(result.degraded),
                    "ragpacer.answer_kind": result.answer_kind,
                    "ragpacer.query_form": result.query_form,
                    "ragpacer.query": result.query if self.capture_queries else None,
                    "ragpacer.elapsed_ms": result.elapsed_ms,
                    "langfuse.trace.name": "ragpacer.request"}))
        finally:
            _TRACE_ID.reset(token)
            _ROOT_SPAN_ID.reset(span_token)
        parent = set_span_in_context(root)
        for rec in result.stages:
            begin = start_ns + int(rec.offset_ms * 1e6)
            attrs: dict[str, Any] = {
                "budget_ms": round(rec.budget_ms, 3), "elapsed_ms": round(rec.elapsed_ms, 3),
                "slack_ms": round(rec.slack_ms, 3), "outcome": rec.outcome.value,
                "fallback": rec.fallback or "", "ragpacer.stage": rec.name}
            if rec.name == "cache":
                attrs["cache_hit"] = result.cached
            if rec.name == "intent":
                attrs["intent"] = result.intent or ""
            if rec.name == "retrieval" and result.questions:
                attrs["ragpacer.questions"] = len(result.questions)
            if rec.name == "generation" and result.unanswered:  # answered in part
                attrs["ragpacer.unanswered"] = len(result.unanswered)
            if rec.name == "generation" and (result.llm_call or result.model):
                attrs.update(_generation_attributes(result, begin))
            span = self.tracer.start_span(f"stage.{rec.name}", context=parent,
                                          start_time=begin, attributes=_drop_none(attrs))
            if rec.outcome.value in ("error", "timeout"):
                span.set_status(Status(StatusCode.ERROR, rec.detail or rec.outcome.value))
            span.end(end_time=begin + int(rec.elapsed_ms * 1e6))
        root.end(end_time=start_ns + int(result.elapsed_ms * 1e6))

    def shutdown(self, timeout_s: float = 3.0) -> None:
        """Flush what is queued, within a bounded time."""
        if self.provider is None:
            return
        t = threading.Thread(target=self.provider.shutdown, daemon=True)
        t.start()
        t.join(timeout_s)


def _caller(result: Result) -> Context | None:
    """The caller's span as the remote parent of the request's root span, when it sent one."""
    if not result.parent_span_id:
        return None
    remote = SpanContext(int(result.trace_id, 16), int(result.parent_span_id, 16),
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return set_span_in_context(NonRecordingSpan(remote))


def _generation_attributes(result: Result, begin_ns: int) -> dict[str, Any]:
    """The engine call's own figures (also when its answer was replaced), else the usage."""
    call = result.llm_call or {"model": result.model, "ttft_ms": result.ttft_ms,
                               "truncated": result.truncated, **(result.usage or {})}
    attrs: dict[str, Any] = {
        "langfuse.observation.type": "generation",
        "gen_ai.system": "openai-compatible",
        "gen_ai.request.model": call["model"],
        "gen_ai.response.model": call["model"],
        "gen_ai.usage.input_tokens": call.get("prompt_tokens", 0),
        "gen_ai.usage.output_tokens": call.get("completion_tokens", 0),
        "gen_ai.response.finish_reasons": (result.finish_reason,),
        "ragpacer.truncated": call["truncated"],
        "ragpacer.answer_used": result.answer_kind == "llm",
        "ragpacer.llm.replica": call.get("replica"),
        "ragpacer.llm.failed_over": tuple(call.get("failed_over") or ()) or None,
    }
    ttft_ms = call.get("ttft_ms")
    if ttft_ms is not None:
        attrs["ttft_ms"] = round(ttft_ms, 3)
        first = (begin_ns + int(ttft_ms * 1e6)) / 1e9
        attrs["langfuse.observation.completion_start_time"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(first)) + f".{int(first % 1 * 1e6):06d}Z"
    return attrs


def _drop_none(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if v is not None}

"""What a request returns to the SDK caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragpacer.pipeline.core.context import TraceContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.stage import Outcome, StageRecord
from ragpacer.retrieval.types import Hit

# The fields a cache hit reuses.
_CACHED = ("answer", "answer_kind", "decline", "sources", "route", "intent",
           "intent_confidence", "model", "evidence", "unanswered")


@dataclass(slots=True)
class Result:
    query: str  # what was answered: the question, or a follow-up's standalone form
    answer: str
    sources: list[Hit]
    route: str | None
    intent: str | None
    intent_confidence: float
    low_confidence: bool
    stages: list[StageRecord]
    degraded: list[str]
    elapsed_ms: float
    trace_id: str
    answer_kind: str = "llm"  # llm | extractive | template | decline
    decline: str | None = None  # out_of_scope | injection | no_evidence
    model: str | None = None
    truncated: bool = False
    finish_reason: str = "stop"
    ttft_ms: float | None = None
    cached: bool = False
    cache_hit: str | None = None  # exact | semantic
    flags: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    span_id: str = ""  # the request's root span (W3C: with trace_id, its traceparent)
    parent_span_id: str | None = None  # the caller's span, when it sent a traceparent
    # How ``query`` was made: asked (as the caller wrote it), carried (a follow-up with the
    # previous turn's words) or rewritten (by the LLM).
    query_form: str = "asked"
    # The engine call's figures (model, prompt and completion tokens, TTFT, truncated), also
    # when its answer was replaced (an extractive fallback, the grounding check); None: none.
    llm_call: dict[str, Any] | None = None
    # The tools that answered: name, result, elapsed_ms and the result in a sentence.
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    # How well the sources answer: the best source sentence's score, which the evidence bar
    # (answers.min_evidence, or the route's) judges. None: nothing was searched or scored.
    evidence: float | None = None
    # The questions a message that asks several was split into, each searched and answered on
    # its own (retrieval.questions); empty for a message that asks one.
    questions: list[str] = field(default_factory=list)
    # The questions of the message the help centre does not answer (each below the evidence
    # bar while another is above it): the answer says so of each and answers the rest.
    unanswered: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, final: Mapping[str, Any], deadline: Deadline,
                   trace: TraceContext) -> Result:
        """The result of a request that ran the graph: its final state."""
        records = final.get("records", [])
        return cls(
            query=final.get("query", ""),
            query_form=final.get("query_form", "asked"),
            answer=final.get("answer", ""),
            sources=list(final.get("sources", [])),
            tool_results=list(final.get("tool_results", [])),
            route=final.get("route"),
            intent=final.get("intent"),
            intent_confidence=final.get("intent_confidence", 0.0),
            low_confidence=final.get("low_confidence", False),
            stages=records,
            degraded=[r.name for r in records if r.outcome is not Outcome.OK],
            elapsed_ms=deadline.elapsed_ms(),
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            parent_span_id=trace.parent_id,
            answer_kind=final.get("answer_kind", "llm"),
            decline=final.get("decline"),
            model=final.get("model"),
            truncated=final.get("truncated", False),
            finish_reason=final.get("finish_reason", "stop"),
            ttft_ms=final.get("ttft_ms"),
            flags=final.get("flags", []),
            usage=final.get("usage", {}),
            llm_call=final.get("llm_call"),
            evidence=final.get("evidence"),
            questions=[q for q, _ in final.get("sub_queries", ())],
            unanswered=list(final.get("unanswered", ())),
        )

    @classmethod
    def from_cache(cls, payload: Mapping[str, Any], query: str, records: list[StageRecord],
                   deadline: Deadline, trace: TraceContext, cache_hit: str | None,
                   query_form: str = "asked") -> Result:
        """A cache hit: what ``cache_payload`` stored, with this request's own timings."""
        return cls(
            query=query,
            query_form=query_form,
            answer=payload["answer"],
            sources=[Hit(**s) for s in payload.get("sources", [])],
            route=payload.get("route"),
            intent=payload.get("intent"),
            intent_confidence=payload.get("intent_confidence", 0.0),
            low_confidence=False,
            stages=records,
            degraded=[],
            elapsed_ms=deadline.elapsed_ms(),
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            parent_span_id=trace.parent_id,
            answer_kind=payload.get("answer_kind", "llm"),
            decline=payload.get("decline"),
            model=payload.get("model"),
            evidence=payload.get("evidence"),
            unanswered=list(payload.get("unanswered", ())),
            cached=True,
            cache_hit=cache_hit,
        )

    def as_dict(self, *, source_texts: bool = True) -> dict[str, Any]:
        """``source_texts=False``: each source by its id, title and score only."""
        return {
            "query": self.query,
            "query_form": self.query_form,
            "answer": self.answer,
            "answer_kind": self.answer_kind,
            "decline": self.decline,
            "sources": [s.as_dict() if source_texts else s.brief() for s in self.sources],
            "route": self.route,
            "intent": self.intent,
            "intent_confidence": self.intent_confidence,
            "low_confidence": self.low_confidence,
            "evidence": self.evidence,
            "questions": self.questions,
            "unanswered": self.unanswered,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "truncated": self.truncated,
            "cached": self.cached,
            "cache_hit": self.cache_hit,
            "flags": self.flags,
            "usage": self.usage,
            "llm_call": self.llm_call,
            "stages": [r.as_dict() for r in self.stages],
            "degraded": self.degraded,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    def cache_payload(self) -> dict[str, Any]:
        """What a later cache hit needs to answer again (``from_cache``); timings are not
        reused."""
        whole = self.as_dict()
        return {k: whole[k] for k in _CACHED}

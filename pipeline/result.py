"""What a request returns to the SDK caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragpacer.pipeline.stage import Outcome, StageRecord
from ragpacer.retrieval.types import Hit


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

    @staticmethod
    def degraded_of(records: list[StageRecord]) -> list[str]:
        return [r.name for r in records if r.outcome is not Outcome.OK]

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answer": self.answer,
            "answer_kind": self.answer_kind,
            "decline": self.decline,
            "sources": [s.as_dict() for s in self.sources],
            "route": self.route,
            "intent": self.intent,
            "intent_confidence": self.intent_confidence,
            "low_confidence": self.low_confidence,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "truncated": self.truncated,
            "cached": self.cached,
            "cache_hit": self.cache_hit,
            "flags": self.flags,
            "usage": self.usage,
            "stages": [r.as_dict() for r in self.stages],
            "degraded": self.degraded,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "trace_id": self.trace_id,
        }

    def cache_payload(self) -> dict[str, Any]:
        """What a later cache hit needs to answer again; timings are not reused."""
        return {
            "answer": self.answer,
            "answer_kind": self.answer_kind,
            "decline": self.decline,
            "sources": [s.as_dict() for s in self.sources],
            "route": self.route,
            "intent": self.intent,
            "intent_confidence": self.intent_confidence,
            "model": self.model,
        }

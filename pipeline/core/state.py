"""The graph's state: what one request carries from stage to stage. Clients live in RunContext."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from ragpacer.pipeline.core.settings import DeclineReason
from ragpacer.pipeline.core.stage import StageRecord


class RequestState(TypedDict, total=False):
    query: str
    cache_key: str
    tenant: str | None
    cached: dict[str, Any]
    cache_hit: str  # exact | semantic
    user_id: str | None
    filters: dict[str, Any]
    route: str
    intent: str | None
    intent_confidence: float
    low_confidence: bool
    query_vector: Any  # numpy vector of the query, computed once by the intent stage
    # A message that asks several questions: each with its vector (retrieval.questions).
    sub_queries: list[tuple[str, Any]]
    sub_routes: list[str]  # each of those questions' own route (the routing table's)
    question: str  # the caller's own last message (``query`` may be its standalone form)
    query_form: str  # asked | carried (a follow-up with the previous turn's words) | rewritten
    history: list[dict[str, str]]  # earlier turns ({"role", "content"}) the prompt may carry
    features: dict[str, Any]
    features_defaulted: list[str]  # names holding the configured default, not the customer's
    sources: list[Any]  # retrieval.Hit
    tool_results: list[dict[str, Any]]
    # The best source sentence's score, which the evidence bar (answers.min_evidence) judges.
    evidence: float | None
    # Questions of the message the sources do not answer while they answer the others.
    unanswered: list[str]
    answer: str
    answer_kind: str  # llm | extractive | template | decline
    decline: DeclineReason  # why the request is declined
    truncated: bool
    finish_reason: str
    ttft_ms: float | None
    model: str | None
    usage: dict[str, int]
    llm_call: dict[str, Any]  # the engine call's own figures, kept when its answer is not
    # Keys that parallel branches write need a reducer.
    flags: Annotated[list[str], operator.add]
    records: Annotated[list[StageRecord], operator.add]

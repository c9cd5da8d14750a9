"""Prometheus metrics: stage latency, breaches and fallbacks, cache, in-flight, LLM tokens/s.

Counted in plain dicts and rendered through a collector when scraped: prometheus_client's own
metric objects take a lock and check their state on every update, about a quarter of a cache
hit's pipeline time for the nine updates a request makes. Updated and read on the pipeline's
event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ragpacer.pipeline.core.stage import Outcome, StageRecord
from ragpacer.pipeline.result import Result

_MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
Labels = tuple[str, ...]


class Family:
    """One counter's or gauge's children by label values."""

    def __init__(self, kind: Literal["counter", "gauge"], name: str, doc: str,
                 labels: Sequence[str] = ()) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, list(labels)
        self.values: dict[Labels, float] = {} if labels else {(): 0.0}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def dec(self, *labels: str) -> None:
        self.inc(*labels, by=-1.0)

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Metric:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=self.labels)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class Histogram:
    """Bucket counts (not yet cumulative), then the sum, per label values."""

    def __init__(self, name: str, doc: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = _MS_BUCKETS) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.bounds = tuple(buckets)
        self.values: dict[Labels, list[float]] = {}

    def observe(self, amount: float, *labels: str) -> None:
        data = self.values.get(labels)
        if data is None:  # one slot per bound, one for +Inf, and the sum
            data = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        data[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount
        data[-1] += amount

    def render(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, data in sorted(self.values.items()):
            total, buckets = 0.0, []
            for bound, count in zip([*self.bounds, float("inf")], data[:-1], strict=True):
                total += count
                buckets.append((floatToGoString(bound), total))
            family.add_metric(list(labels), buckets, sum_value=data[-1])
        return family


class _Families(Collector):
    def __init__(self, families: list[Family | Histogram]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.render()


class _Refusals(Collector):
    """``ragpacer_llm_busy_refusals_total``, read from the LLM client when scraped."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts
        self.family = Family("counter", "ragpacer_llm_busy_refusals",
                             "Calls answered from the sources at once because every replica "
                             "of the model held its max_in_flight calls", ["model"])

    def collect(self) -> Iterator[Metric]:
        self.family.values = {(model,): float(n) for model, n in self.counts().items()}
        yield self.family.render()


class Metrics:
    """One registry per pipeline (tests build many pipelines; globals would collide)."""

    def __init__(self, refusals: Callable[[], dict[str, int]] | None = None) -> None:
        r = self.registry = CollectorRegistry()
        if refusals is not None:
            r.register(_Refusals(refusals))
        self.stage_seconds = Histogram("ragpacer_stage_duration_seconds",
                                       "Time spent in each stage", ["stage", "outcome"])
        self.breaches = Family("counter", "ragpacer_stage_budget_breaches",
                               "Stages cut at or skipped before their budget", ["stage"])
        self.fallbacks = Family("counter", "ragpacer_stage_fallbacks", "Fallbacks taken",
                                ["stage", "fallback"])
        self.requests = Family("counter", "ragpacer_requests", "Requests answered",
                               ["route", "degraded"])
        self.request_seconds = Histogram("ragpacer_request_duration_seconds",
                                         "End-to-end request time")
        # How answers were made: kind llm | extractive | template | decline; reason the
        # decline's (out_of_scope, injection, no_evidence), ungrounded (an LLM answer the
        # grounding stage replaced) or in_part (a question of the message said unanswered).
        self.answers = Family("counter", "ragpacer_answers", "Answers by how they were made",
                              ["kind", "reason"])
        # What customers ask that the help centre does not answer, beside what it does.
        self.unanswered = Family("counter", "ragpacer_unanswered_questions",
                                 "Questions said unanswered in messages answered in part",
                                 ["route"])
        self.cache = Family("counter", "ragpacer_cache_lookups", "Response cache lookups",
                            ["result"])
        self.in_flight = Family("gauge", "ragpacer_requests_in_flight",
                                "Requests being answered")
        self.tokens = Family("counter", "ragpacer_llm_completion_tokens", "Generated tokens",
                             ["model"])
        self.tokens_per_s = Family("gauge", "ragpacer_llm_tokens_per_second",
                                   "Decode speed of the last completion", ["model"])
        self.engine_restarts = Family("counter", "ragpacer_llm_engine_restarts",
                                      "Times the managed engine was started again after it "
                                      "exited")
        self.engine_down_seconds = Family("counter", "ragpacer_llm_engine_down_seconds",
                                          "Time the managed engine was down before a restart "
                                          "brought it back")
        self.replica_calls = Family("counter", "ragpacer_llm_replica_calls",
                                    "Engine calls answered, per replica", ["model", "replica"])
        self.replica_failovers = Family("counter", "ragpacer_llm_replica_failovers",
                                        "Calls a replica failed and another answered",
                                        ["model", "replica"])
        self.prompt_tokens = Histogram("ragpacer_llm_prompt_tokens",
                                       "Prompt tokens per engine call", ["model"],
                                       buckets=(64, 128, 256, 384, 512, 768, 1024, 2048, 4096))
        self.ttft_seconds = Histogram("ragpacer_llm_time_to_first_token_seconds",
                                      "Wait for the first token per engine call", ["model"])
        # Answerability over time: a growing share of low scores is questions the help
        # centre does not answer (declined below answers.min_evidence, or answered weakly).
        self.evidence = Histogram("ragpacer_answer_evidence",
                                  "Best source sentence's score per answer that searched",
                                  ["route"], buckets=(0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6,
                                                      0.75, 0.9, 1.0, 1.2))
        r.register(_Families([v for v in vars(self).values()
                              if isinstance(v, Family | Histogram)]))

    def observe_stage(self, record: StageRecord, state: Any, ctx: Any) -> None:
        self.stage_seconds.observe(record.elapsed_ms / 1000.0, record.name, record.outcome.value)
        if record.outcome in (Outcome.TIMEOUT, Outcome.SKIPPED):
            self.breaches.inc(record.name)
        if record.fallback:
            self.fallbacks.inc(record.name, record.fallback)

    def observe_result(self, result: Result) -> None:
        self.requests.inc(result.route or "", "true" if result.degraded else "false")
        self.request_seconds.observe(result.elapsed_ms / 1000.0)
        self.cache.inc(result.cache_hit or "miss")
        reason = result.decline or ("ungrounded" if "grounding" in result.degraded else
                                    "in_part" if result.unanswered else "")
        self.answers.inc(result.answer_kind, reason)
        if result.unanswered:
            self.unanswered.inc(result.route or "", by=len(result.unanswered))
        if result.evidence is not None:
            self.evidence.observe(result.evidence, result.route or "")
        call = result.llm_call
        if call and not result.cached:
            self.replica_calls.inc(call["model"], call["replica"])
            for failed in call["failed_over"]:
                self.replica_failovers.inc(call["model"], failed)
            self.prompt_tokens.observe(call["prompt_tokens"], call["model"])
            if call["ttft_ms"] is not None:
                self.ttft_seconds.observe(call["ttft_ms"] / 1000.0, call["model"])
        tokens = (result.usage or {}).get("completion_tokens", 0)
        if result.model and tokens and not result.cached:
            self.tokens.inc(result.model, by=tokens)
            gen = next((r for r in result.stages if r.name == "generation"), None)
            if gen is not None and result.ttft_ms is not None and tokens > 1:
                decode_s = (gen.body_ms - result.ttft_ms) / 1000.0
                if decode_s > 0:
                    self.tokens_per_s.set((tokens - 1) / decode_s, result.model)

    def observe_engine_restart(self, down_s: float) -> None:
        self.engine_restarts.inc()
        self.engine_down_seconds.inc(by=down_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

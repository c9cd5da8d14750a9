"""Prometheus metrics: stage latency, breaches and fallbacks, cache, in-flight, LLM tokens/s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ragpacer.pipeline.core.stage import Outcome, StageRecord
from ragpacer.pipeline.result import Result

_MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Refusals(Collector):
    """``ragpacer_llm_busy_refusals_total``, read from the LLM client when scraped."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ragpacer_llm_busy_refusals", "Calls answered from the sources at once because "
            "every replica of the model held its max_in_flight calls", labels=["model"])
        for model, n in sorted(self.counts().items()):
            family.add_metric([model], n)
        yield family


class Metrics:
    """One registry per pipeline (tests build many pipelines; globals would collide)."""

    def __init__(self, refusals: Callable[[], dict[str, int]] | None = None) -> None:
        r = self.registry = CollectorRegistry()
        if refusals is not None:
            r.register(_Refusals(refusals))
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.stage_seconds = Histogram("ragpacer_stage_duration_seconds",
                                       "Time spent in each stage", ["stage", "outcome"],
                                       buckets=_MS_BUCKETS, registry=r)
        self.breaches = Counter("ragpacer_stage_budget_breaches_total",
                                "Stages cut at or skipped before their budget", ["stage"],
                                registry=r)
        self.fallbacks = Counter("ragpacer_stage_fallbacks_total", "Fallbacks taken",
                                 ["stage", "fallback"], registry=r)
        self.requests = Counter("ragpacer_requests_total", "Requests answered",
                                ["route", "degraded"], registry=r)
        self.request_seconds = Histogram("ragpacer_request_duration_seconds",
                                         "End-to-end request time", buckets=_MS_BUCKETS,
                                         registry=r)
        # How answers were made: kind llm | extractive | template | decline; reason the
        # decline's (out_of_scope, injection, no_evidence) or ungrounded (an LLM answer the
        # grounding stage replaced).
        self.answers = Counter("ragpacer_answers_total", "Answers by how they were made",
                               ["kind", "reason"], registry=r)
        self.cache = Counter("ragpacer_cache_lookups_total", "Response cache lookups",
                             ["result"], registry=r)
        self.in_flight = Gauge("ragpacer_requests_in_flight", "Requests being answered",
                               registry=r)
        self.tokens = Counter("ragpacer_llm_completion_tokens_total", "Generated tokens",
                              ["model"], registry=r)
        self.tokens_per_s = Gauge("ragpacer_llm_tokens_per_second",
                                  "Decode speed of the last completion", ["model"], registry=r)
        self.engine_restarts = Counter("ragpacer_llm_engine_restarts_total",
                                       "Times the managed engine was started again after it "
                                       "exited", registry=r)
        self.engine_down_seconds = Counter("ragpacer_llm_engine_down_seconds_total",
                                           "Time the managed engine was down before a restart "
                                           "brought it back", registry=r)
        self.replica_calls = Counter("ragpacer_llm_replica_calls_total",
                                     "Engine calls answered, per replica", ["model", "replica"],
                                     registry=r)
        self.replica_failovers = Counter("ragpacer_llm_replica_failovers_total",
                                         "Calls a replica failed and another answered",
                                         ["model", "replica"], registry=r)
        self.prompt_tokens = Histogram("ragpacer_llm_prompt_tokens",
                                       "Prompt tokens per engine call", ["model"],
                                       buckets=(64, 128, 256, 384, 512, 768, 1024, 2048, 4096),
                                       registry=r)
        self.ttft_seconds = Histogram("ragpacer_llm_time_to_first_token_seconds",
                                      "Wait for the first token per engine call", ["model"],
                                      buckets=_MS_BUCKETS, registry=r)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: ``labels`` takes a lock and converts every
        value on each call, a tenth of a cache hit's time in the server."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_stage(self, record: StageRecord, state: Any, ctx: Any) -> None:
        self._child(self.stage_seconds, record.name, record.outcome.value).observe(
            record.elapsed_ms / 1000.0)
        if record.outcome in (Outcome.TIMEOUT, Outcome.SKIPPED):
            self._child(self.breaches, record.name).inc()
        if record.fallback:
            self._child(self.fallbacks, record.name, record.fallback).inc()

    def observe_result(self, result: Result) -> None:
        self._child(self.requests, result.route or "", str(bool(result.degraded)).lower()).inc()
        self.request_seconds.observe(result.elapsed_ms / 1000.0)
        self._child(self.cache, result.cache_hit or "miss").inc()
        reason = result.decline or ("ungrounded" if "grounding" in result.degraded else "")
        self._child(self.answers, result.answer_kind, reason).inc()
        call = result.llm_call
        if call and not result.cached:
            self._child(self.replica_calls, call["model"], call["replica"]).inc()
            for failed in call["failed_over"]:
                self._child(self.replica_failovers, call["model"], failed).inc()
            self._child(self.prompt_tokens, call["model"]).observe(call["prompt_tokens"])
            if call["ttft_ms"] is not None:
                self._child(self.ttft_seconds, call["model"]).observe(call["ttft_ms"] / 1000.0)
        tokens = (result.usage or {}).get("completion_tokens", 0)
        if result.model and tokens and not result.cached:
            self._child(self.tokens, result.model).inc(tokens)
            gen = next((r for r in result.stages if r.name == "generation"), None)
            if gen is not None and result.ttft_ms is not None and tokens > 1:
                decode_s = (gen.body_ms - result.ttft_ms) / 1000.0
                if decode_s > 0:
                    self._child(self.tokens_per_s, result.model).set((tokens - 1) / decode_s)

    def observe_engine_restart(self, down_s: float) -> None:
        self.engine_restarts.inc()
        self.engine_down_seconds.inc(down_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

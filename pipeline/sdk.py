"""The Python SDK: ``Pipeline.from_config(path)`` then ``await pipeline.arun(query)``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ragpacer.pipeline.answers import within_limits
from ragpacer.pipeline.assembly import assemble, config_version, load_index
from ragpacer.pipeline.cache.caching import Caching
from ragpacer.pipeline.cache.response import CacheLookup, ResponseCache
from ragpacer.pipeline.conversation import history_turns, standalone_query
from ragpacer.pipeline.core.context import NO_OPTIONS, AnswerOptions, RunContext, TraceContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.errors import InputError, SystemMessageRefused
from ragpacer.pipeline.core.graph import build_graph
from ragpacer.pipeline.core.plan import build_plan, check_fallbacks
from ragpacer.pipeline.core.runner import Observer, StageRunner
from ragpacer.pipeline.core.settings import Settings, load_settings
from ragpacer.pipeline.core.stage import Stage, StageRecord
from ragpacer.pipeline.core.state import RequestState
from ragpacer.pipeline.guardrails import StreamRedactor, redact_pii, validate_query
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.llm.engine import ManagedEngine
from ragpacer.pipeline.llm.manager import EngineFleet, managed_engines
from ragpacer.pipeline.llm.rewrite import FollowUpRewrite
from ragpacer.pipeline.llm.supervisor import EngineSupervisor
from ragpacer.pipeline.loop_thread import LoopThread
from ragpacer.pipeline.observe.metrics import Metrics
from ragpacer.pipeline.observe.tracing import Tracing
from ragpacer.pipeline.resources import Resources
from ragpacer.pipeline.result import Result
from ragpacer.retrieval.filters import normalise_filters

# A conversation longer than this is token-counted for usage in a worker thread.
LONG_USAGE_CHARS = 20_000


def _quiet(message: str) -> None:
    pass


class Pipeline:
    """One configured pipeline. Cheap to call concurrently; build one per process.

    ``resources``: what several pipelines of one process share (the opened index, the
    knowledge base's vectors, request-time stores); by default the pipeline makes its own and
    closes them in ``aclose`` (``close_resources=True``: close given ones too)."""

    def __init__(
        self,
        settings: Settings,
        *,
        stages: Mapping[str, Stage] | None = None,
        cache: ResponseCache | None = None,
        llm: LLMClient | None = None,
        observers: Sequence[Observer] = (),
        resources: Resources | None = None,
        close_resources: bool | None = None,
    ) -> None:
        self.settings = settings
        self.llm = llm or LLMClient()
        self.index = load_index(settings)
        # Closed with the pipeline when made here, or when the caller hands them over.
        self._owns_resources = resources is None if close_resources is None else close_resources
        self.resources = resources or Resources()
        assembly = assemble(settings, self.llm, self.index, self.resources)
        built: dict[str, Stage] = {**assembly.stages, **(stages or {})}
        supported = {name: s.fallbacks for name, s in built.items()}
        supported["cache"] = CacheLookup.fallbacks
        supported["rewrite"] = FollowUpRewrite.fallbacks
        check_fallbacks(settings, supported)
        self.stages = built
        self.metrics = Metrics(self.llm.refusals)
        self.runner = StageRunner(build_plan(settings), [self.metrics.observe_stage, *observers],
                                  redact=lambda text: redact_pii(text)[0])
        self.graph = build_graph(settings, built, self.runner)
        self.caching = (Caching(settings, assembly.classifier, cache)
                        if settings.cache.enabled else None)
        self.classifier = assembly.classifier
        self.rewrite = assembly.rewrite
        self.store = assembly.store
        self._count_tokens = assembly.count_tokens
        self.index_id = assembly.index_id
        # Any change to config or index (a re-ingest) makes earlier cache entries unreachable;
        # the same config and index give the same version in every process (a shared cache).
        self.version = f"{config_version(settings)}-{self.index_id}"
        self._portal: LoopThread | None = None
        self.tracing = Tracing(settings)
        self.engines: EngineFleet | None = None  # the managed engines, once astart() ran
        self._warm = False

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs: Any) -> Pipeline:
        return cls(load_settings(path), **kwargs)

    # -- lifecycle ------------------------------------------------------------------------

    async def astart(self, say: Callable[[str], None] = _quiet) -> None:
        """Start what the config asks ragpacer to manage (the LLM engine); idempotent."""
        for stage in self.stages.values():  # e.g. the Feast store, made in this event loop
            await stage.astart()
        if self.caching is not None:
            await self.caching.astart()
        if self.classifier is not None and not self._warm:
            # ONNX Runtime's first run of a graph is slow: pay it here, not on a request.
            await asyncio.to_thread(self.classifier.embed, "warm up")
            self._warm = True
        if self.settings.llm.engine != "managed" or self.engines is not None:
            return
        if not self.uses_llm:
            say("no route answers with the LLM: the managed engine is not started")
            return
        engines = await asyncio.to_thread(managed_engines, self.settings, say)
        self.engines = EngineFleet(engines, self.metrics.observe_engine_restart)
        await self.engines.start(say)

    @property
    def engine(self) -> ManagedEngine | None:
        """The (first) managed engine, once ``astart`` started it."""
        return self.engines.engines[0] if self.engines is not None else None

    @property
    def supervisor(self) -> EngineSupervisor | None:
        """The (first) managed engine's supervisor; None for an adopted engine."""
        sups = self.engines.supervisors if self.engines is not None else []
        return sups[0] if sups else None

    @property
    def uses_llm(self) -> bool:
        """Whether any request can ask the LLM (``Settings.uses_llm``)."""
        return self.settings.uses_llm

    async def __aenter__(self) -> Pipeline:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests -------------------------------------------------------------------------

    async def arun(
        self,
        query: str,
        *,
        user_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        deadline_ms: float | None = None,
        on_token: Callable[[str], None] | None = None,
        tenant: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        options: AnswerOptions | None = None,
        traceparent: str | TraceContext | None = None,
    ) -> Result:
        """Answer one query. ``history``: the conversation's earlier turns (OpenAI-style
        ``{"role", "content"}`` messages); a follow-up is answered as a standalone query built
        from them (``Result.query``). ``options``: the caller's max_tokens, stop, temperature,
        top_p and seed. ``tenant`` separates cache entries (the HTTP layer passes the caller's
        key id), so one tenant never receives another's cached answers. ``traceparent``: the
        caller's W3C header (or a TraceContext made from it); the request's spans join that
        trace under a root span of its own (``Result.trace_id``, ``Result.span_id``)."""
        trace = (traceparent if isinstance(traceparent, TraceContext)
                 else TraceContext.continuing(traceparent))
        self.metrics.in_flight.inc()
        try:
            result = await self._answer(query, user_id, filters, deadline_ms, on_token, tenant,
                                        history, options or NO_OPTIONS, trace)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.observe_result(result)
        return result

    async def _answer(
        self,
        query: str,
        user_id: str | None,
        filters: Mapping[str, Any] | None,
        deadline_ms: float | None,
        on_token: Callable[[str], None] | None,
        tenant: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        options: AnswerOptions = NO_OPTIONS,
        trace: TraceContext | None = None,
    ) -> Result:
        start_ns = time.time_ns()
        deadline, query, scope = self.check_input(query, filters, deadline_ms)
        turns = self._caller_system(history_turns(history))
        asked = [*(t["content"] for t in turns), query]  # what a usage count counts
        question = query
        # The cache, intent and retrieval see the standalone form of a follow-up.
        query = standalone_query(query, turns, self.index.knows)
        ctx = RunContext(deadline, self.settings, trace=trace or TraceContext.new(),
                         on_token=on_token, options=options)
        records: list[StageRecord] = []
        state: RequestState = {
            "query": query,
            "query_form": "asked" if query == question else "carried",
            "question": question,
            "history": turns,
            "user_id": user_id,
            "filters": scope,
            "records": records,
            "flags": [],
        }
        if self.rewrite is not None and state["query_form"] == "carried":
            update, record = await self.runner.run(self.rewrite, state, ctx)
            records.append(record)
            if "query" in update:
                query = state["query"] = update["query"]
                state["query_form"] = "rewritten"
        key = None
        if self.caching is not None:
            key = self.caching.key(query, scope, self.version, tenant)
            lookup: RequestState = {"query": query, "cache_key": key, "filters": scope,
                                    "tenant": tenant}
            update, record = await self.runner.run(self.caching.lookup, lookup, ctx)
            records.append(record)
            if "cached" in update:
                hit = Result.from_cache(update["cached"], query, records, ctx.deadline,
                                        ctx.trace, update.get("cache_hit"), state["query_form"])
                _bound(hit, options)
                await self._count_usage(hit, asked)
                self.tracing.record(hit, start_ns)
                return hit
            if "query_vector" in lookup:  # embedded once, also if the stage was cut after
                state["query_vector"] = lookup["query_vector"]
        final = await self.graph.ainvoke(state, context=ctx)
        result = Result.from_state(final, ctx.deadline, ctx.trace)
        shaped = options.max_tokens is not None or bool(options.stop)
        if result.answer_kind != "llm":
            _bound(result, options)
            await self._count_usage(result, asked)
        if self.caching is not None and key is not None and not shaped:
            self.caching.store(key, result, final, scope, tenant)
        self.tracing.record(result, start_ns)
        return result

    def run(self, query: str, **kwargs: Any) -> Result:
        """Synchronous ``arun`` for scripts and notebooks (runs on a private event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Pipeline.run() called inside an event loop: use await arun()")
        if self._portal is None:
            self._portal = LoopThread()
        self._portal.call(self.astart())
        return self._portal.call(self.arun(query, **kwargs))

    async def astream(self, query: str, **kwargs: Any) -> AsyncIterator[str | Result]:
        """Yield answer text as it is generated (redacted a sentence at a time), then the Result."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        redactor = StreamRedactor(self.settings.guardrails)
        task = asyncio.create_task(self.arun(query, on_token=queue.put_nowait, **kwargs))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    if text := redactor.feed(getter.result()):
                        yield text
                    continue
                getter.cancel()
                break
            result = task.result()
            while not queue.empty():
                redactor.feed(queue.get_nowait())
            rest = redactor.flush()
            if redactor.fed and result.answer_kind == "llm" and not result.cached:
                if rest:
                    yield rest
            elif result.answer:
                # Not streamed token by token (grounded, template, extractive, decline or
                # cached): the checked answer in one chunk.
                yield result.answer
            yield result
        finally:
            if not task.done():
                task.cancel()

    async def aclose(self) -> None:
        if self.caching is not None:
            await self.caching.aclose()
        await self.llm.aclose()
        if self.store is not None:
            await self.store.aclose()
        if self._owns_resources:
            await self.resources.aclose()
        await asyncio.to_thread(self.tracing.shutdown)
        if self.engines is not None:
            engines, self.engines = self.engines, None
            await engines.stop()

    def close(self) -> None:
        """Synchronous ``aclose`` (after ``run``, or for a pipeline never run)."""
        if self._portal is None:
            asyncio.run(self.aclose())
            return
        self._portal.call(self.aclose())
        self._portal.stop()
        self._portal = None

    def check_input(
        self, query: object, filters: Mapping[str, Any] | None, deadline_ms: float | None,
        since: float | None = None,
    ) -> tuple[Deadline, str, dict[str, tuple[str, ...]]]:
        """Validate a request's arguments; raise a typed InputError before any work starts.
        The deadline runs from ``since`` (a ``time.monotonic()``, e.g. a request's arrival)."""
        deadline = self._deadline(deadline_ms, since)
        cleaned = validate_query(query, self.settings.guardrails.max_query_chars)
        scope = normalise_filters(filters, self.settings.retrieval.filter_fields)
        return deadline, cleaned, scope

    # -- helpers --------------------------------------------------------------------------

    def _deadline(self, deadline_ms: float | None, since: float | None = None) -> Deadline:
        if deadline_ms is None:
            return Deadline.after_ms(self.settings.deadline_ms, since)
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int | float):
            raise InputError(f"deadline_ms must be a number, got {type(deadline_ms).__name__}")
        if not 0 < deadline_ms <= self.settings.max_deadline_ms:
            raise InputError(
                f"deadline_ms must be in (0, {self.settings.max_deadline_ms:g}], got {deadline_ms}"
            )
        return Deadline.after_ms(deadline_ms, since)

    def _caller_system(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        """A caller's system messages, by ``llm.caller_system``: kept (the prompt appends them
        to ours), dropped, or refused."""
        policy = self.settings.llm.caller_system
        if policy == "append" or not any(t["role"] in ("system", "developer") for t in turns):
            return turns
        if policy == "refuse":
            raise SystemMessageRefused()
        return [t for t in turns if t["role"] not in ("system", "developer")]

    async def _count_usage(self, result: Result, asked: Sequence[str]) -> None:
        """Usage of an answer no LLM generated (extractive, template, decline, cache hit):
        the conversation and the answer counted with the embedding tokenizer. A long
        conversation is counted off the event loop (the tokenizer releases the GIL):
        256 KB of history takes about 150 ms."""
        def count() -> tuple[int, int]:
            return (sum(self._count_tokens(text) for text in asked),
                    self._count_tokens(result.answer))

        long = sum(map(len, asked)) > LONG_USAGE_CHARS
        prompt, completion = await asyncio.to_thread(count) if long else count()
        result.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                        "total_tokens": prompt + completion}


def _bound(result: Result, options: AnswerOptions) -> None:
    """The caller's max_tokens and stop, on an answer the LLM did not generate under them."""
    answer, finish = within_limits(result.answer, options)
    if finish is not None:
        result.answer, result.finish_reason = answer, finish

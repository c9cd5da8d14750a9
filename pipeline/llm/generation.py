"""The generation stage: LLM (with a model fallback chain), a template, or an extractive answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from ragpacer.agents.tool_runner import run_tools
from ragpacer.agents.tools import openai_tool
from ragpacer.pipeline.answers import (
    decline,
    decline_reason,
    evidence,
    extractive,
    in_part,
    lacks_evidence,
    select,
)
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.errors import LLMBusy, LLMError, LLMUnavailable, ToolArgumentError
from ragpacer.pipeline.core.settings import ModelSettings, Settings
from ragpacer.pipeline.core.stage import Degraded, FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.pipeline.features.stage import known_features
from ragpacer.pipeline.grounding import complete_sentences, strip_markup
from ragpacer.pipeline.llm.client import Completion, LLMClient
from ragpacer.pipeline.llm.prompt import (
    build_messages,
    count_words,
    fit_history,
    system_message,
)
from ragpacer.retrieval.extractive import Selection, SentenceSelector

# The share of the time left that reading the sources may take (prefill); the rest is for the
# answer's tokens.
PREFILL_SHARE = 0.25


def llm_call(c: Completion) -> dict[str, Any]:
    """What one call to the engine cost, kept whether or not its answer is used."""
    return {"model": c.model, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "ttft_ms": c.ttft_ms,
            "truncated": c.truncated, "replica": c.replica, "failed_over": c.failed_over}


def assemble_tool_calls(deltas: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Streamed tool-call fragments -> whole calls (id, name, JSON arguments)."""
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        call = calls.setdefault(d.get("index", 0), {"id": "", "name": "", "arguments": ""})
        call["id"] = d.get("id") or call["id"]
        fn = d.get("function") or {}
        call["name"] += fn.get("name") or ""
        call["arguments"] += fn.get("arguments") or ""
    return [c | {"id": c["id"] or f"call_{i}"} for i, c in sorted(calls.items())]


def model_chain(settings: Settings, first: str) -> list[ModelSettings]:
    """The route's model, then each configured fallback in turn (no cycles)."""
    chain: list[ModelSettings] = []
    model: ModelSettings | None = settings.llm.model(first)
    while model is not None and model not in chain:
        chain.append(model)
        model = settings.llm.model(model.fallback) if model.fallback else None
    return chain


class Generation(StageBase):
    name: ClassVar[str] = "generation"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})
    self_limiting: ClassVar[bool] = True  # the LLM client stops at ctx.cutoff, keeping text

    def __init__(self, llm: LLMClient, tools: Any = None,
                 selector: SentenceSelector | None = None,
                 count_tokens: Callable[[str], int] | None = None) -> None:
        self.llm = llm
        self.tools = tools  # agents.tools.ToolRegistry, for routes with llm_tools
        self.selector = selector or SentenceSelector(None)
        self.count_tokens = count_tokens or count_words

    def _excerpts(self, selection: Selection, model: str | None,
                  ctx: RunContext) -> dict[int, list[str]] | None:
        """The sentences each source is quoted by (None: whole articles), within
        ``llm.source_tokens`` and what the engine reads in PREFILL_SHARE of the time left."""
        cfg = ctx.settings.llm
        if cfg.source_text == "articles":
            return None
        readable = self.llm.prompt_tokens_for(cfg.model(model or "default"), ctx.cutoff,
                                              PREFILL_SHARE)
        return selection.excerpts(min(cfg.source_tokens, readable), self.count_tokens)

    def _history(self, state: RequestState, ctx: RunContext) -> list[dict[str, str]]:
        """Earlier turns within ``llm.history_tokens``, scaled by the share of the default
        deadline still left: a hurried request reads less of the past."""
        turns = state.get("history", [])
        if not turns:
            return []
        share = min(1.0, ctx.cutoff.remaining_ms() / ctx.settings.deadline_ms)
        budget = int(ctx.settings.llm.history_tokens * max(share, 0.0))
        return fit_history(turns, budget, self.count_tokens)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        route = ctx.settings.routing.routes[state["route"]]
        if (reason := decline_reason(state, ctx)) is not None:
            return decline(reason, ctx)
        if route.model is None and route.template is not None:
            return {"answer": route.template, "answer_kind": "template", "model": None}
        selection = select(self.selector, state, ctx)
        searched = "retrieval" in route.stages  # a tools-only route has no sources to judge
        if route.model is None or route.answer == "extractive" or (searched and (
                lacks_evidence(selection, state, ctx) or in_part(selection, state, ctx)[1])):
            # No LLM: the extractive answer, a decline when the sources do not answer, or
            # an answer that says which questions they do not answer.
            return extractive(selection, state, ctx)
        messages = build_messages(
            system_message(ctx.settings.llm.system_prompt, [
                t["content"] for t in state.get("history", [])
                if t["role"] in ("system", "developer")]),
            state.get("question") or state["query"],
            state.get("sources", []),
            state.get("tool_results", []),
            known_features(state),
            self._history(state, ctx),
            self._excerpts(selection, route.model, ctx),
        )
        failures: list[str] = []
        busy = 0
        for model in model_chain(ctx.settings, route.model):
            try:
                c, used = await self._complete_with_tools(model, messages, route, ctx)
            except LLMUnavailable as exc:
                failures.append(str(exc))
                busy += isinstance(exc, LLMBusy)
                continue
            update = self._update(c, ctx) | evidence(selection, state)
            if not update["answer"]:  # cut before its first sentence ended
                update = extractive(selection, state, ctx)
                failures.append("no complete sentence before the cut")
            update["llm_call"] = llm_call(c)
            if used:
                update["tool_results"] = [*state.get("tool_results", []), *used]
            if failures or c.truncated:
                why = "; ".join(failures) or "deadline reached"
                return Degraded(update, f"{'truncated: ' if c.truncated else ''}{why}"[:300])
            return update
        if failures and busy == len(failures):  # every model at its limit: no queueing
            return Degraded(extractive(selection, state, ctx), "; ".join(failures)[:300])
        raise LLMError("; ".join(failures) or "no model configured")

    async def _complete_with_tools(
        self, model: ModelSettings, messages: list[dict[str, Any]], route: Any, ctx: RunContext
    ) -> tuple[Completion, list[dict[str, Any]]]:
        """The model may ask for tools; run them and ask again, bounded by rounds and time."""
        # A grounded answer may still be replaced: it reaches the caller whole, once checked.
        on_token = ctx.on_token if route.answer == "llm" else None
        if not route.llm_tools or self.tools is None:
            c = await self.llm.complete(model, messages, deadline=ctx.cutoff,
                                        on_token=on_token, options=ctx.options,
                                        traceparent=ctx.trace.traceparent)
            return c, []
        specs = [openai_tool(self.tools.get(name)) for name in route.llm_tools]
        used: list[dict[str, Any]] = []
        messages = list(messages)
        for round_no in range(route.max_tool_rounds + 1):
            offer = round_no < route.max_tool_rounds
            extra = {"tools": specs, "tool_choice": "auto"} if offer else None
            c = await self.llm.complete(model, messages, deadline=ctx.cutoff,
                                        on_token=on_token, extra=extra, options=ctx.options,
                                        traceparent=ctx.trace.traceparent)
            calls = assemble_tool_calls(c.tool_calls)
            if not calls or not offer:
                return c, used
            messages.append({"role": "assistant", "content": c.text or None, "tool_calls": [
                {"id": k["id"], "type": "function",
                 "function": {"name": k["name"], "arguments": k["arguments"]}} for k in calls]})
            runnable, replies = [], {}
            for k in calls:
                try:
                    if k["name"] not in route.llm_tools:
                        raise ToolArgumentError(f"tool {k['name']!r} is not offered here")
                    args = json.loads(k["arguments"] or "{}")
                    runnable.append((k, self.tools.get(k["name"]), args))
                except (ToolArgumentError, json.JSONDecodeError) as exc:
                    replies[k["id"]] = {"error": f"rejected: {exc}"}
            results = await run_tools([(t, a) for _, t, a in runnable], ctx.cutoff)
            for (k, _, _), r in zip(runnable, results, strict=True):
                replies[k["id"]] = r.result if r.outcome == "ok" else {"error": r.error or ""}
                used.append(r.as_dict())
            for k in calls:
                messages.append({"role": "tool", "tool_call_id": k["id"],
                                 "content": json.dumps(replies[k["id"]], default=str)[:2000]})
        return c, used

    @staticmethod
    def _update(c: Completion, ctx: RunContext) -> Update:
        # Markup never reaches the caller, and an answer the budget cut ends at its last
        # complete sentence ("" when none was finished); one the model ended itself stays
        # whole, and so does one cut at the caller's own max_tokens (OpenAI's "length").
        text = strip_markup(c.text.strip())
        cut = c.truncated or c.finish_reason == "length"
        asked = ctx.options.max_tokens
        by_caller = asked is not None and not c.truncated and c.completion_tokens >= asked
        answer = complete_sentences(text) if cut and not by_caller else text
        return {
            "answer": answer,
            "answer_kind": "llm",
            "model": c.model,
            "truncated": c.truncated,
            "finish_reason": "length" if cut else (c.finish_reason or "stop"),
            "ttft_ms": c.ttft_ms,
            "usage": {
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens,
            },
        }

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        if (reason := decline_reason(state, ctx)) is not None:
            return decline(reason, ctx)
        return extractive(select(self.selector, state, ctx), state, ctx)

"""The generation stage: LLM (with a model fallback chain), a template, or an extractive answer."""

from __future__ import annotations

from typing import ClassVar

from pipeline.context import RunContext
from pipeline.errors import LLMError, LLMUnavailable
from pipeline.llm import Completion, LLMClient
from pipeline.prompt import build_messages, extractive_answer
from pipeline.settings import ModelSettings, Settings
from pipeline.stage import Degraded, Update
from pipeline.state import RequestState


def model_chain(settings: Settings, first: str) -> list[ModelSettings]:
    """The route's model, then each configured fallback in turn (no cycles)."""
    chain: list[ModelSettings] = []
    model: ModelSettings | None = settings.llm.model(first)
    while model is not None and model not in chain:
        chain.append(model)
        model = settings.llm.model(model.fallback) if model.fallback else None
    return chain


class Generation:
    name: ClassVar[str] = "generation"
    fallbacks: ClassVar[frozenset[str]] = frozenset({"cheaper"})

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        route = ctx.settings.routing.routes[state["route"]]
        if route.model is None:
            if route.template is not None:
                return {"answer": route.template, "answer_kind": "template", "model": None}
            return self._extractive(state)
        messages = build_messages(
            ctx.settings.llm.system_prompt,
            state["query"],
            state.get("sources", []),
            state.get("tool_results", []),
            state.get("features"),
        )
        failures: list[str] = []
        for model in model_chain(ctx.settings, route.model):
            try:
                c = await self.llm.complete(
                    model, messages, deadline=ctx.cutoff, on_token=ctx.on_token
                )
            except LLMUnavailable as exc:
                failures.append(str(exc))
                continue
            update = self._update(c)
            if failures or c.truncated:
                why = "; ".join(failures) or "deadline reached"
                return Degraded(update, f"{'truncated: ' if c.truncated else ''}{why}"[:300])
            return update
        raise LLMError("; ".join(failures) or "no model configured")

    @staticmethod
    def _update(c: Completion) -> Update:
        return {
            "answer": c.text.strip(),
            "answer_kind": "llm",
            "model": c.model,
            "truncated": c.truncated,
            "finish_reason": "length" if c.truncated else (c.finish_reason or "stop"),
            "ttft_ms": c.ttft_ms,
            "usage": {
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens,
            },
        }

    @staticmethod
    def _extractive(state: RequestState) -> Update:
        answer = extractive_answer(state["query"], state.get("sources", []))
        return {"answer": answer, "answer_kind": "extractive", "model": None}

    def fallback(self, kind: str, state: RequestState, ctx: RunContext) -> Update:
        return self._extractive(state)

"""The LLM's standalone form of a follow-up, when the deadline leaves room for it.

``conversation.standalone_query`` carries the previous turn's words along in microseconds; it
is always there. With ``llm.rewrite_model`` set, a follow-up is also rewritten by the LLM into
one standalone question, under the ``rewrite`` stage's budget and only when at least
``llm.rewrite_min_left_ms`` of the deadline would remain for the rest of the request. When it
cannot run, is cut, or gives something that still does not stand alone (a small model
often answers, apologises or keeps "it"), the carried form stands and the stage says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from ragpacer.pipeline.conversation import stands_for
from ragpacer.pipeline.core.context import AnswerOptions, RunContext
from ragpacer.pipeline.core.settings import ModelSettings
from ragpacer.pipeline.core.stage import Degraded, FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.pipeline.llm.client import LLMClient

INSTRUCTIONS = (
    "Rewrite the user's last message as one standalone question that can be understood "
    "without the conversation: name the product, service or topic it refers to. Keep the "
    "user's words where you can. Do not answer it. Reply with the question only."
)
REWRITE_TOKENS = 48
TURNS = 4  # the latest turns of the conversation the rewrite reads
TURN_CHARS = 400


def rewrite_messages(history: Sequence[Mapping[str, str]], question: str) -> list[dict[str, str]]:
    """The latest user and assistant turns (system turns are not the user's words), each cut
    to ``TURN_CHARS``, then the question to rewrite."""
    said = [t for t in history if t["role"] in ("user", "assistant") and t["content"].strip()]
    lines = [f"{t['role']}: {t['content'].strip()[:TURN_CHARS]}" for t in said[-TURNS:]]
    conversation = "\n".join([*lines, f"user: {question.strip()[:TURN_CHARS]}"])
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"Conversation:\n{conversation}\n\nStandalone question:"}]


def clean_rewrite(text: str, max_chars: int) -> str | None:
    """The first line, unquoted; None when nothing usable is left."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = line.removeprefix("Standalone question:").strip().strip("\"'“”").strip()
    return line if 3 <= len(line) <= max_chars else None


class FollowUpRewrite(StageBase):
    """Runs before the cache on a follow-up only; its fallback keeps the carried form."""

    name: ClassVar[str] = "rewrite"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"skip"})

    def __init__(self, llm: LLMClient, model: ModelSettings, min_left_ms: float,
                 known: Callable[[str], bool] | None = None) -> None:
        self.llm = llm
        self.model = model
        self.min_left_ms = min_left_ms
        self.known = known  # the terms the knowledge base uses: a rewrite must name enough

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        left_after = ctx.deadline.remaining_ms() - ctx.cutoff.remaining_ms()
        if left_after < self.min_left_ms:
            return Degraded({}, f"{left_after:.0f} ms would be left after it, "
                                f"{self.min_left_ms:.0f} ms needed: the carried form stands")
        completion = await self.llm.complete(
            self.model, rewrite_messages(state.get("history", []), state["question"]),
            deadline=ctx.cutoff, options=AnswerOptions(max_tokens=REWRITE_TOKENS),
            extra={"temperature": 0.0}, traceparent=ctx.trace.traceparent)
        rewritten = None if completion.truncated else clean_rewrite(
            completion.text, ctx.settings.guardrails.max_query_chars)
        if rewritten is None:
            why = "cut at the deadline" if completion.truncated else "no usable question"
            return Degraded({}, f"rewrite {why}: the carried form stands")
        if not stands_for(rewritten, state["question"], state.get("history", []), self.known):
            return Degraded({}, "the rewrite does not stand alone or asks something else: "
                                "the carried form stands")
        return {"query": rewritten}

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        return {}  # "skip": the carried form stands

"""Answers made without an LLM: declines and the extractive answer.

The generation stage, its fallback and the grounding stage all end here when the LLM cannot or
must not answer, so a decline or an extractive answer reads the same whichever path made it.
"""

from __future__ import annotations

from ragpacer.pipeline.core.context import AnswerOptions, RunContext
from ragpacer.pipeline.core.settings import DeclineReason
from ragpacer.pipeline.core.stage import Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.retrieval.extractive import Selection, SentenceSelector, split_sentences


def decline_reason(state: RequestState, ctx: RunContext) -> DeclineReason | None:
    """Why this request is declined, if it is: set by a stage, or by a route that declines."""
    reason = state.get("decline")
    if reason is None and (route := state.get("route")) is not None:
        reason = ctx.settings.routing.routes[route].decline
    return reason


def decline(reason: DeclineReason, ctx: RunContext) -> Update:
    text = getattr(ctx.settings.answers, reason)
    return {"answer": text, "answer_kind": "decline", "decline": reason, "model": None}


def select(selector: SentenceSelector, state: RequestState, ctx: RunContext) -> Selection:
    return selector.select(state["query"], state.get("query_vector"), state.get("sources", []),
                           ctx.settings.answers.max_sentences, state.get("sub_queries", ()))


def lacks_evidence(selection: Selection, state: RequestState, ctx: RunContext) -> bool:
    """Nothing to answer from: the sources do not answer the question, and no tool result
    stands in for them (the LLM reads tool results; an extractive answer states them)."""
    return not state.get("tool_results") and sources_lack_evidence(selection, state, ctx)


def evidence_bar(state: RequestState, ctx: RunContext) -> float:
    """The route's evidence bar, else answers.min_evidence."""
    route, default = state.get("route"), ctx.settings.answers.min_evidence
    if route is None or route not in ctx.settings.routing.routes:
        return default
    return ctx.settings.routing.evidence_bar(route, default)


def sources_lack_evidence(selection: Selection, state: RequestState, ctx: RunContext) -> bool:
    """The sources' best sentences do not answer the question (the route's evidence bar)."""
    if not selection.sentences:
        return True
    return selection.evidence is not None and selection.evidence < evidence_bar(state, ctx)


def in_part(selection: Selection, state: RequestState,
            ctx: RunContext) -> tuple[Selection, tuple[str, ...]]:
    """A message whose questions the sources answer only in part: the selection for the
    answered ones, and the others (see ``Selection.answering``); else the selection, and none.
    Not beside a tool result: a question the sources do not answer may be the tool's."""
    if state.get("tool_results") or not selection.asked:
        return selection, ()
    return selection.answering(question_bars(state, ctx), ctx.settings.answers.max_sentences)


def question_bars(state: RequestState, ctx: RunContext) -> list[float]:
    """The evidence each question of the message needs: its own route's bar ("do you sell
    gift cards" routes where only strong evidence answers), else the message's."""
    routes, asked = state.get("sub_routes", ()), state.get("sub_queries", ())
    if len(routes) != len(asked):  # not routed one by one (no embedding classifier)
        return [evidence_bar(state, ctx)] * len(asked)
    default = ctx.settings.answers.min_evidence
    return [ctx.settings.routing.evidence_bar(r, default) for r in routes]


def tool_statements(state: RequestState) -> list[str]:
    """The tools' results in sentences (from tools that describe theirs)."""
    return [r["statement"] for r in state.get("tool_results", []) if r.get("statement")]


def evidence(selection: Selection, state: RequestState) -> Update:
    """How well the sources answer, for the result (None: the route searched nothing)."""
    return {"evidence": None if "sources" not in state or selection.evidence is None
            else round(selection.evidence, 4)}


def extractive(selection: Selection, state: RequestState, ctx: RunContext) -> Update:
    """The tools' statements (the customer's own data), then the sources' sentences that
    answer, then the questions of the message they do not answer; a decline when neither
    does. A tool result is never a reason to quote sources that do not answer."""
    parts = tool_statements(state)
    # In part: what is quoted passed its own questions' bars, not the whole message's.
    selection, unanswered = in_part(selection, state, ctx)
    if unanswered or not sources_lack_evidence(selection, state, ctx):
        parts.append(selection.answer())
    if not parts:
        return decline("no_evidence", ctx) | evidence(selection, state)
    parts += [ctx.settings.answers.unanswered_part.format(question=q[:1].upper() + q[1:])
              for q in unanswered]  # "... and do you offer X": a sentence of its own
    return {"answer": " ".join(parts), "answer_kind": "extractive", "model": None,
            "unanswered": list(unanswered), **evidence(selection, state)}


def within_limits(answer: str, options: AnswerOptions) -> tuple[str, str | None]:
    """An answer made without the LLM, bounded by the caller's ``stop`` and ``max_tokens``
    (counted in words): whole sentences while they fit, else the first words. Returns the
    answer and the finish reason it now has (None: unchanged)."""
    reason = None
    for stop in options.stop:
        if stop and stop in answer:
            answer, reason = answer[: answer.index(stop)].rstrip(), "stop"
    limit = options.max_tokens
    if limit is None or len(answer.split()) <= limit:
        return answer, reason
    kept: list[str] = []
    for sentence in split_sentences(answer):
        if len(" ".join([*kept, sentence]).split()) > limit:
            break
        kept.append(sentence)
    cut = " ".join(kept) if kept else " ".join(answer.split()[:limit])
    return cut, "length"

"""Is an answer supported by its evidence? Claims, markup and sentence ends, in microseconds.

A *claim* is something a customer acts on and a model can invent: a number, an amount, a
percentage, a time, a phone number, an email address or a URL. An answer is grounded when every
claim it makes appears in its evidence (the sources, the tool results and the question) and
enough of its content words do too. The answer-quality eval uses the same checks, so the figure
it reports is the figure the guard enforces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ragpacer.pipeline.answers import extractive, select, tool_statements
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import Degraded, FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState
from ragpacer.pipeline.features.stage import known_features
from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.extractive import SentenceSelector

_URL = re.compile(r"\bhttps?://[^\s<>()\]]+|\bwww\.[^\s<>()\]]+|\b[\w-]+(?:\.[\w-]+)*\."
                  r"(?:com|org|net|eu|io|be|de|fr|uk|example)\b(?:/[^\s<>()\]]*)?",
                  re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<![\w.])\+?\d{2,4}(?:[ -]\d{2,4}){2,4}(?![\w.%])")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:\s?%)?")
# Citation markers and list numbering are ours, not claims.
_CITATION = re.compile(r"\[\s*\d+(?:\s*[,-]\s*\d+)*\s*\]|\((?:source|sources)\s*\d+\)|"
                       r"\bsources?\s*\d+\b|^\s*\d+[.)]\s", re.IGNORECASE | re.MULTILINE)
_SCRIPT = re.compile(r"<\s*(script|style)\b.*?(?:<\s*/\s*\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?\s*[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>|<!--.*?-->|</?\s*[A-Za-z][\w:-]*\s*$",
                  re.DOTALL)
_SPACES = re.compile(r"[ \t]{2,}")
# A sentence ends at . ! ? before a space or the end (so not inside 0.5), optionally followed
# by closing quotes or brackets and citation markers.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?:\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\])*(?=\s|$)")

_analyzer = Analyzer()


def strip_markup(text: str) -> str:
    """Drop HTML/XML the model emits (script blocks whole, other tags alone)."""
    if "<" not in text:
        return text
    text = _SCRIPT.sub(" ", text)
    text = _TAG.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _norm_number(raw: str) -> str:
    n = raw.replace(",", "").replace(" ", "")
    if "." in n and not n.endswith("%"):
        n = n.rstrip("0").rstrip(".") if re.fullmatch(r"\d+\.\d+", n) else n
    elif "." in n:
        body = n[:-1]
        body = body.rstrip("0").rstrip(".") if re.fullmatch(r"\d+\.\d+", body) else body
        n = body + "%"
    return n


def claims(text: str) -> set[str]:
    """The checkable claims of a text, normalised (``5,000`` -> ``5000``, ``3.0%`` -> ``3%``)."""
    text = _CITATION.sub(" ", text)
    out: set[str] = set()
    for m in _EMAIL.finditer(text):
        out.add(m.group().lower())
    text = _EMAIL.sub(" ", text)
    for m in _URL.finditer(text):
        out.add(m.group().lower().rstrip(".,;:/"))
    text = _URL.sub(" ", text)
    for m in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if len(digits) >= 8:
            out.add(digits)
            text = text.replace(m.group(), " ")
    for m in _NUMBER.finditer(text):
        out.add(_norm_number(m.group()))
    return out


def evidence_claims(texts: Iterable[str]) -> set[str]:
    """Claims of the evidence, with bare numbers for its percentages (``1.5%`` supports 1.5)."""
    found: set[str] = set()
    for t in texts:
        found |= claims(t)
    return found | {c[:-1] for c in found if c.endswith("%")}


def unsupported(answer: str, evidence: Iterable[str]) -> list[str]:
    """The answer's claims that appear nowhere in the evidence."""
    own = claims(answer)
    if not own:
        return []
    known = evidence_claims(evidence)
    return sorted(c for c in own if c not in known)


def content_overlap(answer: str, evidence: Iterable[str]) -> float:
    """The share of the answer's content words (stemmed) that the evidence contains."""
    words = _analyzer(_CITATION.sub(" ", answer))
    if not words:
        return 1.0
    vocab: set[str] = set()
    for t in evidence:
        vocab.update(_analyzer(t))
    return sum(w in vocab for w in words) / len(words)


def complete_sentences(text: str) -> str:
    """The text up to its last complete sentence; "" when no sentence is complete."""
    text = text.rstrip()
    end = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
    return text[:end].rstrip()


def ends_mid_sentence(text: str) -> bool:
    text = text.strip()
    return bool(text) and complete_sentences(text) != text


@dataclass(frozen=True, slots=True)
class Verdict:
    grounded: bool
    unsupported: tuple[str, ...]
    overlap: float

    @property
    def reason(self) -> str:
        if self.unsupported:
            return f"ungrounded: not in the sources: {', '.join(self.unsupported[:5])}"
        return f"ungrounded: {self.overlap:.0%} of its words in the sources"


def judge(answer: str, evidence: list[str], min_overlap: float) -> Verdict:
    missing = unsupported(answer, evidence)
    overlap = content_overlap(answer, evidence)
    return Verdict(not missing and overlap >= min_overlap, tuple(missing), overlap)


def leaves_out(answer: str, chosen: Iterable[str]) -> list[str]:
    """The claims of the texts that answer best (the extractive selection's sentences, or
    the tools' statements) when the answer states none of them: it then does not say what
    they do."""
    key: set[str] = set()
    for text in chosen:
        key |= claims(text)
    return [] if not key or key & claims(answer) else sorted(key)


def tool_evidence(tool_results: Iterable[Mapping[str, Any]]) -> list[str]:
    """What the tools returned, as text an answer's claims are looked up in."""
    return [json.dumps(r.get("result"), ensure_ascii=False, default=str) for r in tool_results]


def evidence_of(state: RequestState) -> list[str]:
    """What an answer may draw on: the sources, the tool results, the question itself and
    what is known of the customer (a default standing in for a feature is not)."""
    texts = [f"{h.title}. {h.text}" for h in state.get("sources", [])]
    texts += tool_evidence(state.get("tool_results", []))
    texts.append(state.get("query", ""))
    if known := known_features(state):
        texts.append(json.dumps(known, default=str))
    return texts


class Grounding(StageBase):
    """After generation: an LLM answer its evidence does not support becomes the extractive
    answer, marked degraded (`ungrounded: ...`), so it is counted, traced and never cached."""

    name: ClassVar[str] = "grounding"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})

    def __init__(self, selector: SentenceSelector | None = None) -> None:
        self.selector = selector or SentenceSelector(None)

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        return self._check(state, ctx)

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        # The check is microseconds of regex: even out of budget, nothing unchecked passes.
        out = self._check(state, ctx)
        return out.update if isinstance(out, Degraded) else out

    def _check(self, state: RequestState, ctx: RunContext) -> Update | Degraded:
        route = ctx.settings.routing.routes.get(state.get("route", ""))
        if state.get("answer_kind") != "llm" or route is None or route.answer == "llm":
            return {}
        answer = state.get("answer", "")
        verdict = judge(answer, evidence_of(state), ctx.settings.answers.min_overlap)
        selection = select(self.selector, state, ctx)
        reason = None if verdict.grounded else verdict.reason
        # What the sources say, and what the customer's own data says.
        if reason is None and (left_out := (
                leaves_out(answer, [s.text for s in selection.sentences])
                or leaves_out(answer, tool_statements(state)))):
            reason = f"incomplete: leaves out {', '.join(left_out[:5])}"
        if reason is None:
            return {}
        update = extractive(selection, state, ctx)
        return Degraded({**update, "truncated": False, "finish_reason": "stop"}, reason)

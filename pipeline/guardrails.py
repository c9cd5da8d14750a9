"""Input and output guardrails: cheap, synchronous, bounded (regexes over at most a few KB)."""

from __future__ import annotations

import re
from typing import ClassVar

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.errors import (
    BlockedInputError,
    EmptyQueryError,
    InputError,
    QueryTooLongError,
)
from ragpacer.pipeline.core.settings import GuardrailSettings
from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState

_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]"
)
_EMAIL = re.compile(r"\b[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()./-]{7,16}\d(?!\d|[ -]\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_INJECTION = re.compile(
    r"ignore\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier)\s+"
    r"(?:instructions|prompts?|rules)"
    r"|disregard\s+(?:all\s+|the\s+|your\s+)*(?:previous\s+|prior\s+)?(?:instructions|rules)"
    r"|(?:reveal|print|show|repeat)\s+(?:me\s+)?(?:your|the)\s+(?:system\s+)?prompt"
    r"|you\s+are\s+now\s+(?:a|an|in)\b|developer\s+mode|jailbreak|\bDAN\b"
    r"|forget\s+(?:everything|all|your)\b[^.?!]{0,40}\b(?:told|instructions|rules|prompt)"
    r"|pretend\s+(?:that\s+)?you\s+(?:have|are|had)\s+no\b"
    r"|</?(?:system|source|tool)>|\[/?INST\]|<\|im_(?:start|end)\|>",
    re.IGNORECASE,
)


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97: country and check digits moved to the end, letters as 10-35, the
    number modulo 97 is 1. Order numbers shaped like an IBAN fail it 96 times in 97."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(digits) % 97 == 1


def find_pii(text: str, allow: frozenset[str] = frozenset()) -> list[tuple[str, int, int]]:
    """(kind, start, end) for emails, card numbers (Luhn-checked), IBANs (mod-97-checked) and
    phone numbers.

    ``allow`` holds the organisation's own public contacts, which are not personal data.
    """
    found = _find_all(text)
    if not found or not allow:
        return found
    public = [(m.start(), m.end()) for a in allow for m in re.finditer(re.escape(a), text)]
    return [f for f in found if not any(s < f[2] and f[1] < e for s, e in public)]


def _find_all(text: str) -> list[tuple[str, int, int]]:
    found: list[tuple[str, int, int]] = []
    for m in _EMAIL.finditer(text):
        found.append(("email", m.start(), m.end()))
    for m in _CARD.finditer(text):
        if luhn_ok(re.sub(r"\D", "", m.group())):
            found.append(("card", m.start(), m.end()))
    for m in _IBAN.finditer(text):
        if iban_ok(m.group()):
            found.append(("iban", m.start(), m.end()))
    taken = [(s, e) for _, s, e in found]
    for m in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        overlaps = any(s < m.end() and m.start() < e for s, e in taken)
        if 9 <= len(digits) <= 15 and not overlaps:
            found.append(("phone", m.start(), m.end()))
    return sorted(found, key=lambda f: f[1])


def redact_pii(text: str, allow: frozenset[str] = frozenset()) -> tuple[str, list[str]]:
    """Replace every PII span with ``[KIND]``; return the text and the kinds found."""
    spans = find_pii(text, allow)
    if not spans:
        return text, []
    out, last, kinds = [], 0, []
    for kind, start, end in spans:
        if start < last:
            continue
        out.append(text[last:start])
        out.append(f"[{kind.upper()}]")
        kinds.append(kind)
        last = end
    out.append(text[last:])
    return "".join(out), kinds


def validate_query(query: object, max_chars: int) -> str:
    """The cheap checks every entry point runs first; raises a typed InputError."""
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    if len(query) > max_chars:
        raise QueryTooLongError(f"query has {len(query)} characters; the limit is {max_chars}")
    cleaned = _CONTROL.sub("", query).strip()
    if not cleaned:
        raise EmptyQueryError("query is empty or whitespace only")
    return cleaned


def looks_like_injection(text: str) -> bool:
    return _INJECTION.search(text) is not None


def check_input(query: str, cfg: GuardrailSettings) -> Update:
    """Injection and PII checks; raises BlockedInputError when the config says block."""
    flags: list[str] = []
    update: Update = {}
    if looks_like_injection(query):
        if cfg.injection_action == "block":
            raise BlockedInputError("the query looks like a prompt-injection attempt")
        flags.append("prompt_injection")
        if cfg.injection_action == "decline":
            update["decline"] = "injection"
    allow = frozenset(cfg.pii_allowlist)
    pii = sorted({kind for kind, _, _ in find_pii(query, allow)})
    if pii:
        if cfg.pii_action == "block":
            raise BlockedInputError(
                f"the query contains personal data ({', '.join(pii)}); remove it and ask again"
            )
        flags += [f"pii:{k}" for k in pii]
        if cfg.pii_action == "redact":
            query, _ = redact_pii(query, allow)
    return {**update, "query": query, "flags": flags} if flags else update


def check_output(answer: str, cfg: GuardrailSettings) -> Update:
    if not cfg.redact_output_pii or not answer:
        return {}
    redacted, kinds = redact_pii(answer, frozenset(cfg.pii_allowlist))
    if not kinds:
        return {}
    return {"answer": redacted, "flags": [f"output_pii:{k}" for k in sorted(set(kinds))]}


class InputGuardrails(StageBase):
    # The checks are microseconds of regex: the "cheaper" fallback runs them anyway, so a
    # spent budget never lets an unchecked query through.
    name: ClassVar[str] = "input_guardrails"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        return check_request(state, ctx.settings.guardrails)

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        return check_request(state, ctx.settings.guardrails)


def check_request(state: RequestState, cfg: GuardrailSettings) -> Update:
    """``check_input`` on the query; with ``pii_action: redact``, the caller's own question and
    the conversation's earlier turns (both can reach the prompt) are redacted too."""
    update = check_input(state["query"], cfg)
    if cfg.pii_action != "redact":
        return update
    allow = frozenset(cfg.pii_allowlist)
    if "question" in state:
        update["question"] = redact_pii(state["question"], allow)[0]
    if state.get("history"):
        update["history"] = [{**t, "content": redact_pii(t["content"], allow)[0]}
                             for t in state["history"]]
    return update


class OutputGuardrails(StageBase):
    name: ClassVar[str] = "output_guardrails"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"cheaper"})

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        return check_output(state.get("answer", ""), ctx.settings.guardrails)

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        return check_output(state.get("answer", ""), ctx.settings.guardrails)


_BOUNDARY = re.compile(r"[.!?;:\n]\s|\n")


class StreamRedactor:
    """Releases streamed text redacted, never splitting a PII span across two releases.

    Text is released at sentence ends, or, for long unpunctuated runs, at a space well behind
    the newest text; a release point inside a detected PII span moves back to its start.
    """

    HOLD_CHARS = 48  # longer than any card number, IBAN or phone number we detect

    def __init__(self, cfg: GuardrailSettings) -> None:
        self.cfg = cfg
        self.allow = frozenset(cfg.pii_allowlist)
        self._pending = ""
        self.fed = False  # whether any streamed text came in


    def feed(self, text: str) -> str:
        self.fed = True
        self._pending += text
        cut = 0
        for match in _BOUNDARY.finditer(self._pending):
            cut = match.end()
        if len(self._pending) - cut > 2 * self.HOLD_CHARS:
            cut = max(cut, self._pending.rfind(" ", 0, len(self._pending) - self.HOLD_CHARS) + 1)
        if cut <= 0:
            return ""
        for _, start, end in find_pii(self._pending, self.allow):
            if start < cut < end:
                cut = start
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._redact(ready)

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return self._redact(ready)

    def _redact(self, text: str) -> str:
        if not self.cfg.redact_output_pii or not text:
            return text
        return redact_pii(text, self.allow)[0]

"""A conversation in, one standalone query out: what the cache, intent and retrieval see.

"How much does that cost?" means nothing alone. A follow-up (it refers back, or says too little
to stand alone) carries the previous user turn's words along; a self-contained question stands
as it is. Microseconds of string work, no model call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragpacer.pipeline.core.errors import InputError
from ragpacer.retrieval.analyzer import Analyzer

# Words that point back at an earlier turn.
_REFERS_BACK = re.compile(
    r"\b(?:it|its|that|this|these|those|they|them|their|one|ones|there|then|same|also|"
    r"instead|else|another|more)\b", re.IGNORECASE)
# A question with fewer content words the knowledge base uses than this needs its context
# ("How long will you take to answer?" names no topic the help centre knows).
MIN_STANDALONE_TERMS = 3
REPLY_CHARS = 200
# Of the previous question, its end (where a long message asks): the carried query is
# embedded and searched on every request, and a pasted page would cost its tokenizing.
TURN_CHARS = 600
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

_analyzer = Analyzer()


def history_turns(history: Sequence[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    """Earlier turns as ``{"role", "content"}``, validated; raises a typed InputError."""
    turns: list[dict[str, str]] = []
    for i, m in enumerate(history or ()):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            raise InputError(f"history[{i}] must be a message with a role in {sorted(ROLES)}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise InputError(f"history[{i}].content must be a string")
        turns.append({"role": str(m["role"]), "content": content or ""})
    return turns


def is_follow_up(query: str, known: Callable[[str], bool] | None = None) -> bool:
    """It refers back, or names too little to stand alone (``known``: the terms the knowledge
    base uses; None: every term counts)."""
    terms = [t for t in _analyzer(query) if known is None or known(t)]
    return bool(_REFERS_BACK.search(query)) or len(terms) < MIN_STANDALONE_TERMS


def stands_for(rewrite: str, question: str, history: Sequence[Mapping[str, str]],
               known: Callable[[str], bool] | None = None) -> bool:
    """Whether a rewrite of ``question`` asks the same thing on its own: it keeps at least half
    of the question's terms and adds one the earlier turns used (the topic it refers to)."""
    def terms(text: str) -> set[str]:
        return {t for t in _analyzer(text) if known is None or known(t)}

    asked, rewritten = terms(question), terms(rewrite)
    earlier = set().union(*(terms(t["content"]) for t in history)) if history else set()
    kept = len(asked & rewritten) * 2 >= len(asked)
    return kept and bool((rewritten - asked) & earlier)


def standalone_query(query: str, history: Sequence[Mapping[str, str]],
                     known: Callable[[str], bool] | None = None) -> str:
    """The query itself, or, for a follow-up, the previous exchange followed by it: the user's
    last turn and the first sentence of the reply to it, which usually names the topic."""
    if not history or not is_follow_up(query, known):
        return query
    last_user = max((i for i, m in enumerate(history)
                     if m["role"] == "user" and m["content"].strip()), default=None)
    if last_user is None:
        return query
    parts = [_tail(history[last_user]["content"].strip(), TURN_CHARS)]
    reply = next((m["content"] for m in history[last_user + 1:]
                  if m["role"] == "assistant" and m["content"].strip()), None)
    if reply:
        parts.append(_first_sentence(reply)[:REPLY_CHARS])
    return " ".join([*parts, query])


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, from a word's start."""
    if len(text) <= limit:
        return text
    return text[-limit:].split(None, 1)[-1]  # without the word the cut went through


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]

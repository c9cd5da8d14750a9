"""A message that asks two things: its questions, so each is searched and answered.

"What does a business account cost and how many cards can it issue?" embeds as one vector
between the two articles; the sources and sentences that answer one half outscore those that
answer the other. Split conservatively: only a message that opens with a question word and
whose every further part opens with one too ("... and what", "...? How", "...; can"); a
statement before a question ("I lost my job, can I ...") is one question with its context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# Words a question opens with ("to" continues one: "what does it cost to send and to receive").
_OPENERS = ("what", "what's", "whats", "how", "which", "when", "where", "why", "who", "whose",
            "can", "could", "do", "does", "did", "is", "are", "was", "will", "would", "should",
            "may", "am", "has", "have")
_OPENER = "|".join(re.escape(w) for w in _OPENERS)
_BOUNDARY = re.compile(
    rf"\?\s+|;\s*|,?\s+and\s+(?=(?:{_OPENER}|to)\b)|,\s+(?=(?:{_OPENER})\b)", re.IGNORECASE)
_OPENS = re.compile(rf"(?:{_OPENER})\b", re.IGNORECASE)
_AND = re.compile(r"^(?:and|also)\s+", re.IGNORECASE)  # "...? And how long does it take?"
_CONTINUES = re.compile(rf"(?:{_OPENER}|to)\b", re.IGNORECASE)
MAX_QUESTIONS = 3
MAX_CHARS = 300  # a longer message is a story, not two short questions
MIN_TERMS = 2  # a part with fewer search terms ("and why?") is not a question of its own


def sub_questions(text: str, terms: Callable[[str], Sequence[str]]) -> list[str]:
    """The questions ``text`` asks when it asks two or three, else []. ``terms``: the
    analyzer, to tell a question from a fragment."""
    if len(text) > MAX_CHARS:
        return []
    parts = [_AND.sub("", p.strip(" ,?!.")) for p in _BOUNDARY.split(text.strip())]
    parts = [p for p in parts if p]
    if not 2 <= len(parts) <= MAX_QUESTIONS or not _OPENS.match(parts[0]):
        return []
    if not all(_CONTINUES.match(p) for p in parts[1:]):
        return []
    if any(len(set(terms(p))) < MIN_TERMS for p in parts):
        return []
    return parts

"""Prompts: sources and tool results in a compact, cited form, quoted as data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragpacer.retrieval.types import Hit

MAX_SOURCE_CHARS = 700
_TAGLIKE = re.compile(r"</?\s*(?:source|tool|system|customer)\b[^>]*>", re.IGNORECASE)


def _quote(text: str, limit: int) -> str:
    # Documents cannot close our tags and speak as the system: strip tag look-alikes.
    text = _TAGLIKE.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def count_words(text: str) -> int:
    """The token count to use without a tokenizer: words."""
    return len(text.split())


def fit_history(turns: Sequence[dict[str, str]], budget: int,
                count: Callable[[str], int]) -> list[dict[str, str]]:
    """The newest user and assistant turns whose tokens fit ``budget``, in their order."""
    kept: list[dict[str, str]] = []
    for turn in reversed([t for t in turns if t["role"] in ("user", "assistant")]):
        budget -= count(turn["content"])
        if budget < 0:
            break
        kept.append({"role": turn["role"], "content": _quote(turn["content"], 2000)})
    return kept[::-1]


def system_message(system_prompt: str, caller: Sequence[str]) -> str:
    """Ours first, always; a caller's system messages after it, as the operator's."""
    extra = "\n".join(_quote(c, 1000) for c in caller if c.strip())
    return f"{system_prompt}\nOperator instructions: {extra}" if extra else system_prompt


def build_messages(
    system_prompt: str,
    query: str,
    sources: Sequence[Hit] = (),
    tool_results: Sequence[dict[str, Any]] = (),
    features: dict[str, Any] | None = None,
    history: Sequence[dict[str, str]] = (),
    excerpts: Mapping[int, Sequence[str]] | None = None,
) -> list[dict[str, str]]:
    """Our system prompt first (the same for every request: the engine's prefix cache reads
    it once); the conversation's earlier turns (already fitted); then one user message with
    the sources, tool results and customer features quoted as data, and the question.
    ``excerpts``: per source number, the sentences to quote instead of the whole text (a
    source without any is left out; the others keep their numbers for citations)."""
    parts: list[str] = []
    for i, hit in enumerate(sources, 1):
        if excerpts is not None and not excerpts.get(i):
            continue
        text = hit.text if excerpts is None else " ".join(excerpts[i])
        parts.append(
            f'<source id="{i}" title="{_quote(hit.title, 120)}">'
            f"{_quote(text, MAX_SOURCE_CHARS)}</source>"
        )
    for result in tool_results:
        payload = json.dumps(result.get("result"), ensure_ascii=False, separators=(",", ":"))
        parts.append(f'<tool name="{result.get("name")}">{_quote(payload, 500)}</tool>')
    if features:
        compact = ",".join(f"{k}={v}" for k, v in features.items())
        parts.append(f"<customer>{_quote(compact, 300)}</customer>")
    parts.append(f"Question: {query}")
    return [
        {"role": "system", "content": system_prompt},
        *history,
        {"role": "user", "content": "\n".join(parts)},
    ]

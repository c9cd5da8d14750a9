"""Prompts: sources and tool results in a compact, cited form, quoted as data."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ragpacer.retrieval.types import Hit

MAX_SOURCE_CHARS = 700
_TAGLIKE = re.compile(r"</?\s*(?:source|tool|system|customer)\b[^>]*>", re.IGNORECASE)


def _quote(text: str, limit: int) -> str:
    # Documents cannot close our tags and speak as the system: strip tag look-alikes.
    text = _TAGLIKE.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def build_messages(
    system_prompt: str,
    query: str,
    sources: Sequence[Hit] = (),
    tool_results: Sequence[dict[str, Any]] = (),
    features: dict[str, Any] | None = None,
) -> list[dict[str, str]]:
    parts: list[str] = []
    for i, hit in enumerate(sources, 1):
        parts.append(
            f'<source id="{i}" title="{_quote(hit.title, 120)}">'
            f"{_quote(hit.text, MAX_SOURCE_CHARS)}</source>"
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
        {"role": "user", "content": "\n".join(parts)},
    ]

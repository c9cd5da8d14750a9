"""Knowledge search as a tool (for models that ask for more sources mid-answer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class KnowledgeSearch:
    name: ClassVar[str] = "knowledge_search"
    description: ClassVar[str] = "Search the help centre; returns titles and short extracts."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 500},
                       "k": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(self, index: Any, timeout_s: float = 0.05) -> None:
        self.index = index  # retrieval.BM25Index
        self.timeout_s = timeout_s

    async def __call__(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        hits = self.index.search(args["query"], args.get("k", 3))
        return [{"id": h.id, "title": h.title, "extract": h.text[:240]} for h in hits]

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {"query": state.get("query", ""), "k": 3}

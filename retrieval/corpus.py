"""Reading documents from disk with errors that name the file and line."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ragpacer.pipeline.core.errors import CorpusError
from ragpacer.retrieval.types import Document


def demo_knowledge_base() -> Path:
    return Path(str(resources.files("ragpacer.pipeline") / "demo" / "knowledge_base.jsonl"))


def load_jsonl(path: Path) -> list[Document]:
    """One JSON object a line with ``id`` and ``text`` (``title``, ``metadata`` optional)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
    docs: list[Document] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise CorpusError(f"{path}:{n}: each line needs a string field 'text'")
        doc_id = str(obj.get("id") or obj.get("_id") or f"{path.stem}-{n}")
        if doc_id in seen:
            raise CorpusError(f"{path}:{n}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise CorpusError(f"{path}:{n}: 'metadata' must be an object")
        docs.append(Document(id=doc_id, text=obj["text"], title=str(obj.get("title", "")),
                             metadata=meta))
    return docs

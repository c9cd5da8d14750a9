"""``ragpacer ingest PATH``: documents -> chunks -> dense + BM25 vectors -> a Qdrant Edge shard.

Atomic: every ingest builds a new shard next to the live one and then swaps the `current`
symlink (a rename, atomic on POSIX); a failed or interrupted ingest leaves the previous index
serving. Idempotent: chunk ids are stable, so the same input gives the same index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.corpus import CorpusError, load_jsonl
from ragpacer.retrieval.sparse import document_weights
from ragpacer.retrieval.types import Document

SUFFIXES = (".md", ".txt", ".jsonl")


def chunk(doc: Document, words: int = 180, overlap: int = 40) -> list[Document]:
    """Split long documents into overlapping word windows; short ones stay whole."""
    tokens = doc.text.split()
    if len(tokens) <= words:
        return [Document(id=f"{doc.id}#0", text=doc.text, title=doc.title,
                         metadata={**doc.metadata, "source_id": doc.id})]
    out, step = [], words - overlap
    for n, start in enumerate(range(0, max(len(tokens) - overlap, 1), step)):
        out.append(Document(id=f"{doc.id}#{n}", text=" ".join(tokens[start:start + words]),
                            title=doc.title, metadata={**doc.metadata, "source_id": doc.id}))
    return out


def _front_matter(text: str, source: Path) -> tuple[dict[str, Any], str]:
    """YAML between a leading ``---`` line and the next: strings, numbers, quoted values,
    lists and multi-line values. Values become strings (lists of strings), as filters match."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    try:
        meta = yaml.safe_load(text[4:end + 1]) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 2}" if mark is not None else ""  # + the opening --- line
        raise CorpusError(f"{source}{where}: front matter is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(meta, dict):
        raise CorpusError(f"{source}:2: front matter must be a mapping of keys to values")
    return {str(k): _meta_value(v, source, k) for k, v in meta.items()}, \
        text[end + 4:].lstrip("\n")


def _meta_value(value: Any, source: Path, key: Any) -> str | list[str]:
    if isinstance(value, list):
        if any(isinstance(v, list | dict) for v in value):
            raise CorpusError(f"{source}: front matter {key!r} nests lists or mappings")
        return [str(v) for v in value]
    if isinstance(value, dict):
        raise CorpusError(f"{source}: front matter {key!r} is a mapping; use flat keys")
    return "" if value is None else str(value)


def read_documents(path: Path) -> list[Document]:
    """A .jsonl file (ours or BEIR corpus.jsonl), or a folder of .md/.txt/.jsonl files."""
    if not path.exists():
        raise CorpusError(f"{path} not found")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise CorpusError(f"no {', '.join(SUFFIXES)} files in {path}")
    docs: list[Document] = []
    for f in files:
        if f.suffix == ".jsonl":
            docs += load_jsonl(f)
            continue
        try:
            raw = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot read {f}: {exc}") from exc
        meta, body = _front_matter(raw, f)
        title = str(meta.pop("title", f.stem.replace("-", " ").replace("_", " ")))
        rel = f.relative_to(path) if path.is_dir() else Path(f.name)
        docs.append(Document(id=str(meta.pop("id", str(rel.with_suffix("")))), text=body,
                             title=title, metadata=meta))
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CorpusError(f"duplicate document id {dup!r} in {path}")
    return docs


def ingest(path: Path, index_root: Path, embedder, filter_fields: Iterable[str],
           progress: Callable[[int, int], None] | None = None, batch: int = 64) -> dict:
    t0 = time.perf_counter()
    chunks = _chunks(path)
    index_root.mkdir(parents=True, exist_ok=True)
    with ingest_lock(index_root):
        return _build(path, chunks, index_root, embedder, filter_fields, progress, batch, t0)


def _chunks(path: Path) -> list[Document]:
    """The chunks of every document at ``path``; none is an error: switching to an empty
    index would decline every question."""
    chunks = [c for d in read_documents(path) for c in chunk(d)]
    if not chunks:
        raise CorpusError(f"{path} holds no documents (.md, .txt, .jsonl or a BEIR "
                          "corpus.jsonl with text); the current index is kept")
    return chunks


@contextlib.contextmanager
def ingest_lock(index_root: Path) -> Iterator[None]:
    """One ingest or delete at a time per index; a killed holder's lock dies with it."""
    with open(index_root / ".ingest.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"another ingest is running on {index_root}") from None
        yield


def _build(path: Path, chunks: list[Document], index_root: Path, embedder,
           filter_fields: Iterable[str], progress: Callable[[int, int], None] | None,
           batch: int, t0: float) -> dict:
    from ragpacer.retrieval.stores.edge import EdgeStore

    build = index_root / f"shard-{time.time_ns()}.partial"
    store = EdgeStore.create(build, 384, list(filter_fields))
    try:
        analyzer = Analyzer()
        sparse = document_weights([analyzer(f"{c.title}\n{c.text}") for c in chunks])
        for start in range(0, len(chunks), batch):
            part = chunks[start:start + batch]
            dense = embedder.embed([f"{c.title}. {c.text}" for c in part])
            store.upsert(part, np.asarray(dense), sparse[start:start + batch])
            if progress is not None:
                progress(min(start + batch, len(chunks)), len(chunks))
        count = store.count()
        store.close()
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)  # the live index is untouched
        raise
    final = build.with_suffix("")
    build.rename(final)
    (final / "ragpacer-index.json").write_text(json.dumps({
        "source": str(path), "chunks": count, "embedder": embedder.checksum}))
    _swap_current(index_root, final)
    return {"documents": len({c.metadata["source_id"] for c in chunks}), "chunks": count,
            "seconds": round(time.perf_counter() - t0, 2), "path": str(final),
            "disk_bytes": sum(p.stat().st_blocks * 512 for p in final.rglob("*") if p.is_file())}


def ingest_server(path: Path, url: str, alias: str, embedder, filter_fields: Iterable[str],
                  progress: Callable[[int, int], None] | None = None,
                  batch: int = 64) -> dict:
    """The same chunks and vectors into a new collection of a Qdrant server, then the alias
    the pipeline queries (``retrieval.collection``) switched to it in one update and the
    previous collection dropped: queries see the old index or the new one, never a mix."""
    import asyncio

    return asyncio.run(_ingest_server(path, url, alias, embedder, list(filter_fields),
                                      progress, batch))


async def _ingest_server(path: Path, url: str, alias: str, embedder, filter_fields: list[str],
                         progress: Callable[[int, int], None] | None, batch: int) -> dict:
    from ragpacer.retrieval.stores.server import ServerStore

    t0 = time.perf_counter()
    chunks = _chunks(path)
    store = ServerStore(url, f"{alias}-{time.time_ns()}", timeout_s=30)
    await store.create(384, filter_fields)
    try:
        sparse = document_weights([Analyzer()(f"{c.title}\n{c.text}") for c in chunks])
        for start in range(0, len(chunks), batch):
            part = chunks[start:start + batch]
            dense = embedder.embed([f"{c.title}. {c.text}" for c in part])
            await store.upsert(part, np.asarray(dense), sparse[start:start + batch])
            if progress is not None:
                progress(min(start + batch, len(chunks)), len(chunks))
        before = await store.switch_alias(alias)
    except BaseException:
        await store.client.delete_collection(store.collection)  # the live one is untouched
        await store.aclose()
        raise
    if before is not None:
        await store.client.delete_collection(before)
    await store.aclose()
    return {"documents": len({c.metadata["source_id"] for c in chunks}), "chunks": len(chunks),
            "seconds": round(time.perf_counter() - t0, 2), "path": f"{url} {store.collection}",
            "disk_bytes": 0}


def delete_documents(index_root: Path, doc_ids: Iterable[str]) -> dict:
    """Remove documents (all their chunks) on a copy of the live shard, then switch to it."""
    live = current_index(index_root)
    if live is None:
        raise CorpusError(f"no index under {index_root}: nothing to delete from")
    with ingest_lock(index_root):
        return _delete(live, index_root, doc_ids)


def _delete(live: Path, index_root: Path, doc_ids: Iterable[str]) -> dict:
    import qdrant_edge as q

    from ragpacer.retrieval.stores.edge import EdgeStore

    def source(ids: list[str]) -> q.Filter:
        return q.Filter(must=[q.FieldCondition(key="source_id", match=q.MatchAny(any=ids))])

    ids = list(dict.fromkeys(doc_ids))
    build = index_root / f"shard-{time.time_ns()}.partial"
    shutil.copytree(live, build)
    try:
        store = EdgeStore.open(build)
        absent = [i for i in ids
                  if not store.shard.count(q.CountRequest(exact=True, filter=source([i])))]
        if len(absent) == len(ids):  # a mistyped id: no new shard, no switch
            store.close()
            raise CorpusError(f"no document {', '.join(map(repr, absent))} in the index "
                              "(an id is the source document's); nothing changed")
        before = store.count()
        store.shard.update(q.UpdateOperation.delete_points_by_filter(source(ids)))
        after = store.count()
        store.close()
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    final = build.with_suffix("")
    build.rename(final)
    _swap_current(index_root, final)
    return {"removed_chunks": before - after, "chunks": after, "path": str(final),
            "not_found": absent}


def _swap_current(root: Path, target: Path) -> None:
    link = root / "current"
    old = link.resolve() if link.is_symlink() else None
    tmp = root / f".current-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.name)
    os.replace(tmp, link)  # atomic switch
    if old is not None and old != target.resolve():
        shutil.rmtree(old, ignore_errors=True)
    # Leftovers of ingests killed before their switch: partial builds, finished shards that
    # never went live, temporary links. Ingests hold the lock, so none of these is in use.
    for stale in [*root.glob("shard-*"), *root.glob(".current-*")]:
        if stale.name != target.name:
            if stale.is_symlink() or stale.is_file():
                stale.unlink(missing_ok=True)
            else:
                shutil.rmtree(stale, ignore_errors=True)


def current_index(index_root: Path) -> Path | None:
    link = index_root / "current"
    return link.resolve() if link.is_symlink() and link.resolve().exists() else None

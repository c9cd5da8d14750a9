"""Ingestion into Qdrant Edge: idempotent, atomic, crash-safe, clear errors, filters hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.corpus import CorpusError
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir
from ragpacer.retrieval.filters import matches
from ragpacer.retrieval.ingest import chunk, current_index, ingest, read_documents
from ragpacer.retrieval.stores.edge import EdgeStore
from ragpacer.retrieval.types import Document
from tests.conftest import ROOT
from tests.strategies import FILTERS

FIELDS = ["department", "doc_type", "product"]
KB = ROOT / "pipeline" / "demo" / "knowledge_base.jsonl"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not (embedder_dir(ROOT / ".ragpacer") / "model-int8.onnx").exists():
        pytest.skip("embedder not prepared: run `ragpacer models prepare` (make test does)")
    return Embedder(embedder_dir(ROOT / ".ragpacer"))


@pytest.fixture(scope="module")
def store(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> EdgeStore:
    root = tmp_path_factory.mktemp("idx")
    ingest(KB, root, embedder, FIELDS)
    return EdgeStore.open(current_index(root))


def test_ingest_is_idempotent_and_replaces_atomically(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = ingest(KB, tmp_path, embedder, FIELDS)
    second = ingest(KB, tmp_path, embedder, FIELDS)
    assert first["chunks"] == second["chunks"] == 67
    assert current_index(tmp_path) == Path(second["path"]).resolve()
    assert not Path(first["path"]).exists(), "the replaced shard is cleaned up"
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("shard-")]) == 1


def test_a_failed_ingest_leaves_the_previous_index_serving(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok = ingest(KB, tmp_path, embedder, FIELDS)

    class Crashing:
        checksum = embedder.checksum
        calls = 0

        def embed(self, texts):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("killed mid-ingest")
            return embedder.embed(texts)

    with pytest.raises(RuntimeError, match="mid-ingest"):
        ingest(KB, tmp_path, Crashing(), FIELDS, batch=16)
    live = current_index(tmp_path)
    assert live == Path(ok["path"]).resolve()
    assert not list(tmp_path.glob("*.partial"))
    store = EdgeStore.open(live)
    assert store.count() == 67
    store.close()


def test_bad_input_is_reported_and_the_index_kept(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest(KB, tmp_path / "idx", embedder, FIELDS)
    before = current_index(tmp_path / "idx")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "fine"}\n{"id": "y"}\n')
    with pytest.raises(CorpusError, match=":2: each line needs a string field 'text'"):
        ingest(bad, tmp_path / "idx", embedder, FIELDS)
    with pytest.raises(CorpusError, match="not found"):
        ingest(tmp_path / "missing", tmp_path / "idx", embedder, FIELDS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.md"):
        read_documents(tmp_path / "empty")
    blank = tmp_path / "blank.jsonl"  # an export that came out empty
    blank.write_text("\n\n")
    with pytest.raises(CorpusError, match=r"holds no documents.*current index is kept"):
        ingest(blank, tmp_path / "idx", embedder, FIELDS)
    assert current_index(tmp_path / "idx") == before


def test_folders_front_matter_and_beir(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "fees.md").write_text(
        "---\ntitle: Card fees\nproduct: cards\n---\nForeign payments cost 1.5%.\n"
    )
    (tmp_path / "docs" / "note.txt").write_text("Plain text note.")
    (tmp_path / "docs" / "corpus.jsonl").write_text(
        json.dumps({"_id": "beir-1", "title": "BEIR doc", "text": "From a BEIR corpus."}) + "\n"
    )
    docs = {d.id: d for d in read_documents(tmp_path / "docs")}
    assert docs["fees"].title == "Card fees" and docs["fees"].metadata == {"product": "cards"}
    assert docs["note"].text == "Plain text note." and "beir-1" in docs


def test_front_matter_is_yaml_lists_quotes_and_multi_line(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        '---\ntitle: "Fees: cards and transfers"\nproduct: [cards, transfers]\n'
        "summary: >\n  Two lines\n  of summary.\nyear: 2026\n---\nBody.\n")
    doc = read_documents(tmp_path / "a.md")[0]
    assert doc.title == "Fees: cards and transfers" and doc.text == "Body.\n"
    assert doc.metadata == {"product": ["cards", "transfers"],
                            "summary": "Two lines of summary.\n", "year": "2026"}
    index = BM25Index([doc, Document("b", "Body.", "Other", {"product": "loans"})])
    assert [h.id for h in index.search("body", 5, {"product": ("transfers",)})] == ["a"]


def test_broken_front_matter_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("---\ntitle: ok\nproduct: [cards\n---\nBody.\n")
    with pytest.raises(CorpusError, match=r"bad\.md:\d+: front matter is not valid YAML"):
        read_documents(tmp_path / "bad.md")


def test_chunks_overlap_and_keep_their_source() -> None:
    doc = Document(id="long", text=" ".join(f"w{i}" for i in range(500)), metadata={"a": "b"})
    parts = chunk(doc, words=180, overlap=40)
    assert len(parts) == 4 and parts[1].text.split()[0] == "w140"
    assert all(p.metadata == {"a": "b", "source_id": "long"} for p in parts)


QUERIES = ["lost card", "fees abroad", "reset my password", "loan repayment", "joint account"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    filters=FILTERS,
    query=st.sampled_from(QUERIES),
    mode=st.sampled_from(["bm25", "dense", "bm25_then_dense", "fusion"]),
)
def test_edge_filters_never_return_non_matching_documents(
    store,
    embedder,
    filters,
    query,  # type: ignore[no-untyped-def]
    mode,
) -> None:
    for hit in store.search(query, embedder.embed_one(query), 10, filters, mode, 50):
        assert matches(hit.metadata, filters), (hit.id, filters)


def test_edge_modes_agree_with_the_in_memory_index(store, embedder) -> None:  # type: ignore[no-untyped-def]
    q = "I cannot remember the secret number for my card"
    v = embedder.embed_one(q)
    assert store.search(q, v, 1, None, "dense")[0].id == "cards-pin#0"
    assert store.search(q, v, 1, None, "bm25_then_dense", 50)[0].id == "cards-pin#0"
    bm25 = [h.id for h in store.search("lost card", None, 3, None, "bm25")]
    assert bm25[0] == "cards-lost#0"
    assert np.isfinite([h.score for h in store.search(q, v, 5, None, "fusion")]).all()


def test_documents_can_be_deleted_and_the_switch_is_atomic(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ragpacer.retrieval.ingest import delete_documents

    ingest(KB, tmp_path, embedder, FIELDS)
    out = delete_documents(tmp_path, ["cards-pin", "cards-lost", "cards-typo"])
    assert out["removed_chunks"] == 2 and out["chunks"] == 65
    assert out["not_found"] == ["cards-typo"]
    store = EdgeStore.open(current_index(tmp_path))
    ids = [h.id for h in store.search("forgotten PIN lost card", None, 20, None, "bm25")]
    assert "cards-pin#0" not in ids and "cards-lost#0" not in ids
    store.close()
    with pytest.raises(CorpusError, match="no index"):
        delete_documents(tmp_path / "nothing", ["x"])
    # Only mistyped ids: an error, and the index is the one it was (no copy left behind).
    live, shards = current_index(tmp_path), sorted(tmp_path.glob("shard-*"))
    with pytest.raises(CorpusError, match="no document 'cards-pni' in the index"):
        delete_documents(tmp_path, ["cards-pni"])
    assert current_index(tmp_path) == live and sorted(tmp_path.glob("shard-*")) == shards


def test_kill_9_of_the_ingest_process_leaves_the_previous_index_and_a_rerun_completes(
        embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real `ragpacer ingest` process, killed with SIGKILL at random points mid-build."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(ROOT / ".ragpacer" / "models")
    root = home / "index"
    ingest(KB, root, embedder, FIELDS)  # the live index: 67 chunks
    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        for i in range(600):
            fh.write(json.dumps({"id": f"d{i}", "title": f"Doc {i}",
                                 "text": f"Document {i} about cards, fees and transfers. " * 8,
                                 "metadata": {"product": "cards"}}) + "\n")
    env = {**os.environ, "RAGPACER_HOME": str(home)}
    cmd = [sys.executable, "-m", "ragpacer.pipeline.cli", "ingest", str(big)]
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and not list(root.glob("shard-*.partial")):
            time.sleep(0.01)  # kill only once the new shard is being built
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        live = current_index(root)
        assert live is not None
        store = EdgeStore.open(live)  # the previous index (or the finished new one) is whole
        assert store.count() in (67, 600)
        store.close()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = EdgeStore.open(current_index(root))
    assert store.count() == 600
    store.close()
    assert sorted(p.name for p in root.iterdir() if p.name != ".ingest.lock") == \
        sorted(["current", current_index(root).name]), "no leftovers of the killed runs"

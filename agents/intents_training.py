"""The training workflow behind ``ragpacer intents train|eval``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ragpacer.agents.intents import IntentHead, evaluate, train_head
from ragpacer.agents.lexical import IntentDataError, demo_intents, read_intents
from ragpacer.retrieval.embedder import Embedder


def data_files(data: Path | None) -> tuple[Path, Path | None]:
    """A CSV file, or a folder with train.csv (and optionally test.csv); None: the demo."""
    if data is None:
        return demo_intents(), None
    if data.is_dir():
        train, test = data / "train.csv", data / "test.csv"
        if not train.exists():
            raise IntentDataError(f"{data} has no train.csv")
        return train, test if test.exists() else None
    if not data.exists():
        raise IntentDataError(f"{data} not found")
    return data, None


def _embed(embedder: Embedder, rows: list[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
    return embedder.embed_many([t for t, _ in rows]), [lab for _, lab in rows]


def train(embedder: Embedder, data: Path | None, out: Path, seed: int = 0) -> IntentHead:
    train_path, test_path = data_files(data)
    rows = read_intents(train_path)
    t0 = time.perf_counter()
    x, y = _embed(embedder, rows)
    head = train_head(x, y, embedder.checksum, seed=seed)
    head.metrics.update({"data": str(train_path), "train_s": round(time.perf_counter() - t0, 2),
                         "train_accuracy": evaluate(head, x, y)["accuracy"]})
    if test_path is not None:
        report = evaluate(head, *_embed(embedder, read_intents(test_path)))
        head.metrics.update({k: report[k] for k in ("accuracy", "macro_f1", "n")})
    head.save(out)
    return head


def evaluate_file(embedder: Embedder, head: IntentHead, data: Path | None) -> dict[str, Any]:
    train_path, test_path = data_files(data)
    return evaluate(head, *_embed(embedder, read_intents(test_path or train_path)))

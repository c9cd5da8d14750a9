"""MiniLM sentence embeddings with onnxruntime + tokenizers only (no torch at run time).

One session per process, its intra-op threads sized on purpose (on 2 cores, pools that
fight cost more than they give). ``embed_one`` is the latency path for a single query;
``embed`` batches for ingestion and for the micro-batcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ragpacer.pipeline.core.errors import EmbedderError
from ragpacer.retrieval.embedder_prepare import embedder_checksum
from ragpacer.retrieval.memo import ShortTextCache

DIM = 384
# Documents are embedded with up to this many tokens at ingest (abstract-length articles lose
# their second half at 128); queries keep the session's 128.
DOCUMENT_TOKENS = 256
# Token counts of texts up to this long are cached (a 2,000-character question fits).
CACHED_TEXT_CHARS = 2048


class Embedder:
    def __init__(self, folder: Path, *, variant: str = "int8", threads: int = 1,
                 max_tokens: int = 128) -> None:
        model = folder / f"model-{variant}.onnx"
        if not model.exists() or not (folder / "tokenizer.json").exists():
            raise EmbedderError(f"{model} not found: run `ragpacer models prepare`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()
        self._counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()  # the file pads to 128: counts must be of the text
        # An encode costs about 0.1 ms; a cache hit's answer and question recur, so repeats
        # are looked up rather than tokenised again. Long texts are not kept: the cache holds
        # its keys, and 8,192 pasted pages would be gigabytes.
        self.count_tokens = ShortTextCache(self._count_tokens, 8192, CACHED_TEXT_CHARS)
        self.variant = variant
        self.checksum = embedder_checksum(folder, variant)

    def _count_tokens(self, text: str) -> int:
        """Tokens of the text by this model's WordPiece tokenizer, whatever its length."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (padding to the batch's longest)."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return out.astype(np.float32, copy=False)

    def embed_one(self, text: str) -> np.ndarray:
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        (out,) = self.session.run(None, {"input_ids": ids,
                                         "attention_mask": np.ones_like(ids)})
        return out[0]

    def embed_many(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        """Ingestion path: sorted by length so each batch pads little."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            out[idx] = self.embed([texts[i] for i in idx])
        return out

"""The intent classifier: a softmax-regression head on the shared INT8 MiniLM embedding.

Trained by ``ragpacer intents train``: seeded, reproducible, temperature-calibrated on a
held-out split so that its confidence means something; below ``routing.min_confidence`` the
pipeline takes the default route. The artifact records the embedder's checksum and refuses
to load against another embedder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragpacer.pipeline.core.errors import IntentArtifactError

ARTIFACT_VERSION = 1


@dataclass
class IntentHead:
    labels: list[str]
    weights: np.ndarray  # (dim, n_labels)
    bias: np.ndarray  # (n_labels,)
    temperature: float
    embedder_checksum: str
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # Unit centroids of each label's examples. A softmax always picks *some* label, however
    # far the query is from all of them; the cosine to the nearest centroid says whether the
    # query is in scope at all (measured on the demo: out-of-scope <= 0.33, in-scope >= 0.5).
    centroids: np.ndarray | None = None
    scope_low: float = 0.25
    scope_high: float = 0.45

    def in_scope(self, vector: np.ndarray) -> float:
        """1.0 near a known intent, falling to 0.0 far from all of them."""
        if self.centroids is None:
            return 1.0
        cos = float((self.centroids @ vector).max())
        return min(1.0, max(0.0, (cos - self.scope_low) / (self.scope_high - self.scope_low)))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return _softmax((vectors @ self.weights + self.bias) / self.temperature)

    def classify_vector(self, vector: np.ndarray,
                        open_labels: frozenset[str] = frozenset()) -> tuple[str, float]:
        """The likeliest label and its confidence, lowered for a query far from every
        label's examples; except for ``open_labels`` (out of scope, not offered), whose
        queries are far from the examples by nature."""
        p = self.probabilities(vector[None, :])[0]
        i = int(p.argmax())
        label = self.labels[i]
        return label, float(p[i]) * (1.0 if label in open_labels else self.in_scope(vector))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": ARTIFACT_VERSION, "labels": self.labels,
                "temperature": self.temperature, "embedder_checksum": self.embedder_checksum,
                "metrics": self.metrics, "seed": self.seed, "scope": [self.scope_low,
                                                                     self.scope_high]}
        tmp = path.with_suffix(".partial.npz")
        centroids = self.centroids if self.centroids is not None else np.zeros((0, 0))
        np.savez(tmp, weights=self.weights, bias=self.bias, centroids=centroids,
                 meta=json.dumps(meta))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, embedder_checksum: str | None = None) -> IntentHead:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                head = cls(labels=meta["labels"], weights=data["weights"], bias=data["bias"],
                           temperature=meta["temperature"],
                           embedder_checksum=meta["embedder_checksum"],
                           metrics=meta.get("metrics", {}), seed=meta.get("seed", 0),
                           centroids=data["centroids"] if data["centroids"].size else None)
                head.scope_low, head.scope_high = meta.get("scope", [0.25, 0.45])
        except FileNotFoundError as exc:
            raise IntentArtifactError(f"{path} not found: run `ragpacer intents train`") from exc
        except (OSError, KeyError, ValueError) as exc:
            raise IntentArtifactError(f"{path} is not a ragpacer intent artifact: {exc}") from exc
        if meta.get("version") != ARTIFACT_VERSION:
            raise IntentArtifactError(f"{path} has version {meta.get('version')}, "
                                      f"expected {ARTIFACT_VERSION}: retrain it")
        if embedder_checksum is not None and head.embedder_checksum != embedder_checksum:
            raise IntentArtifactError(
                f"{path} was trained on embedder {head.embedder_checksum[:12]}... but the "
                f"pipeline runs {embedder_checksum[:12]}...: retrain with "
                "`ragpacer intents train`")
        return head


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _by_label(labels: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Each label's examples in a random order (the stratification of both splits)."""
    for lab in np.unique(labels):
        yield rng.permutation(np.flatnonzero(labels == lab))


def _split(n: int, labels: np.ndarray, held_out: float, rng: np.random.Generator):
    """Stratified: every label keeps examples on both sides when it has at least two."""
    train, hold = [], []
    for idx in _by_label(labels, rng):
        k = round(len(idx) * held_out) if len(idx) > 1 else 0
        hold += list(idx[:k])
        train += list(idx[k:])
    return np.array(sorted(train)), np.array(sorted(hold))


# Below this many examples the temperature is calibrated on k folds instead of one held-out
# tenth: a tenth of a few hundred examples is a few dozen, and the temperature fitted on them
# swung from 0.8 to 1.4 with the seed on the demo intents (k folds: 1.1-1.2).
FOLDS_BELOW = 2000
FOLDS = 5


def _cross_validated_logits(x: np.ndarray, y: np.ndarray, n_labels: int,
                            rng: np.random.Generator, **fit: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each example's logits from a head trained on the other folds (stratified; a label's
    only example is never held out, as in ``_split``)."""
    fold = np.full(len(y), -1)
    for idx in _by_label(y, rng):
        if len(idx) > 1:
            fold[idx] = np.arange(len(idx)) % FOLDS
    logits = np.zeros((len(y), n_labels))
    for f in range(FOLDS):
        w, b = fit_softmax(x[fold != f], y[fold != f], n_labels, **fit)
        logits[fold == f] = x[fold == f] @ w + b
    return logits[fold >= 0], y[fold >= 0]


def fit_softmax(
    x: np.ndarray, y: np.ndarray, n_labels: int, *, l2: float = 1e-3, epochs: int = 300,
    lr: float = 0.05, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, full batch, Adam; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, (x.shape[1], n_labels)).astype(np.float64)
    b = np.zeros(n_labels)
    onehot = np.eye(n_labels)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, epochs + 1):
        p = _softmax(x @ w + b)
        g = (p - onehot) / len(x)
        grads = [x.T @ g + l2 * w, g.sum(0)]
        for i, (param, grad) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad**2
            param -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return w, b


def calibrate_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (a 1-D grid search)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(10.0), 120)):
        p = _softmax(logits / t)
        nll = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
        if nll < best_nll:
            best_t, best_nll = float(t), float(nll)
    return best_t


def train_head(vectors: np.ndarray, labels: Sequence[str], embedder_checksum: str, *,
               seed: int = 0, held_out: float = 0.1, l2: float = 1e-3, epochs: int = 300,
               scale: float = 20.0) -> IntentHead:
    names = sorted(set(labels))
    y = np.array([names.index(lab) for lab in labels])
    x = vectors.astype(np.float64) * scale  # unit vectors: scale so logits can be sharp
    rng = np.random.default_rng(seed)
    if len(x) < FOLDS_BELOW:
        logits, gold = _cross_validated_logits(x, y, len(names), rng, l2=l2, epochs=epochs,
                                               seed=seed)
    else:
        tr, ho = _split(len(x), y, held_out, rng)
        w, b = fit_softmax(x[tr], y[tr], len(names), l2=l2, epochs=epochs, seed=seed)
        logits, gold = x[ho] @ w + b, y[ho]
    temperature = calibrate_temperature(logits, gold) if len(gold) else 1.0
    # Final head: all data, same hyper-parameters; the calibrated temperature carries over.
    w, b = fit_softmax(x, y, len(names), l2=l2, epochs=epochs, seed=seed)
    centroids = np.stack([vectors[y == i].mean(0) for i in range(len(names))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    head = IntentHead(labels=names, weights=(w * scale).astype(np.float32),
                      bias=b.astype(np.float32), temperature=temperature,
                      embedder_checksum=embedder_checksum, seed=seed,
                      centroids=centroids.astype(np.float32))
    head.metrics = {"train_examples": len(x), "labels": len(names),
                    "calibration_examples": len(gold)}
    return head


def evaluate(head: IntentHead, vectors: np.ndarray, labels: Sequence[str],
             top_confusions: int = 10) -> dict[str, Any]:
    pred = [head.labels[i] for i in head.probabilities(vectors).argmax(1)]
    gold = list(labels)
    acc = float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))
    f1s = {}
    for lab in sorted(set(gold)):
        tp = sum(p == g == lab for p, g in zip(pred, gold, strict=True))
        fp = sum(p == lab != g for p, g in zip(pred, gold, strict=True))
        fn = sum(g == lab != p for p, g in zip(pred, gold, strict=True))
        f1s[lab] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    confused = Counter((g, p) for p, g in zip(pred, gold, strict=True) if p != g)
    return {"accuracy": acc, "macro_f1": float(np.mean(list(f1s.values()))),
            "n": len(gold), "per_label_f1": f1s,
            "confused": [[g, p, n] for (g, p), n in confused.most_common(top_confusions)]}


class EmbeddingIntentClassifier:
    """Embeds the query once; the vector then serves the head, the cache and the retriever."""

    def __init__(self, embedder: Any, head: IntentHead, batcher: Any = None,
                 open_labels: frozenset[str] = frozenset()) -> None:
        self.embedder = embedder
        self.head = head
        self.batcher = batcher  # retrieval.batcher.MicroBatcher, or None for inline
        self.open_labels = open_labels

    def embed(self, query: str) -> np.ndarray:
        return self.embedder.embed_one(query)

    async def aembed(self, query: str, deadline: Any = None) -> np.ndarray:
        if self.batcher is None:
            return self.embedder.embed_one(query)  # ~1 ms, bounded: fine on the loop
        return await self.batcher.embed(query, deadline)

    def classify_vector(self, vector: np.ndarray) -> tuple[str, float]:
        return self.head.classify_vector(vector, self.open_labels)

    def scope(self, vector: np.ndarray) -> float:
        return self.head.in_scope(vector)

    def classify(self, query: str) -> tuple[str | None, float]:
        return self.head.classify_vector(self.embed(query), self.open_labels)

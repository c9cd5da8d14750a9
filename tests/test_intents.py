"""The embedding intent classifier: training, artifacts, data errors, odd queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragpacer.agents.intents import EmbeddingIntentClassifier, IntentArtifactError, IntentHead
from ragpacer.agents.intents_training import train
from ragpacer.agents.lexical import IntentDataError, demo_intents, read_intents
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir
from tests.conftest import ROOT

HOME = ROOT / ".ragpacer"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not (embedder_dir(HOME) / "model-int8.onnx").exists():
        pytest.skip("embedder not prepared: run `ragpacer models prepare` (make test does)")
    return Embedder(embedder_dir(HOME))


@pytest.fixture(scope="module")
def head(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> IntentHead:
    return train(embedder, None, tmp_path_factory.mktemp("a") / "intents.npz", seed=3)


def test_training_is_reproducible(embedder: Embedder, head: IntentHead, tmp_path: Path) -> None:
    again = train(embedder, None, tmp_path / "again.npz", seed=3)
    assert np.array_equal(again.weights, head.weights) and again.temperature == head.temperature
    other = train(embedder, None, tmp_path / "other.npz", seed=4)
    assert not np.array_equal(other.weights, head.weights)


def test_a_few_hundred_examples_calibrate_the_same_temperature_whatever_the_seed(
        embedder: Embedder, head: IntentHead, tmp_path: Path) -> None:
    """Calibrated on folds covering every example, not one held-out tenth (a few dozen
    examples, whose temperature moved by 0.2 between seeds 0 and 2): the routing threshold
    means the same after a retrain."""
    temperatures = [head.temperature] + [
        train(embedder, None, tmp_path / f"{seed}.npz", seed=seed).temperature
        for seed in (0, 2)]
    assert max(temperatures) - min(temperatures) <= 0.1, temperatures
    assert head.metrics["calibration_examples"] == head.metrics["train_examples"]


def test_artifact_round_trip(embedder: Embedder, head: IntentHead, tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    head.save(path)
    loaded = IntentHead.load(path, embedder.checksum)
    assert loaded.labels == head.labels and np.array_equal(loaded.weights, head.weights)
    assert loaded.metrics["train_examples"] == len(read_intents(demo_intents()))
    v = embedder.embed_one("I lost my card")
    assert loaded.classify_vector(v) == head.classify_vector(v)
    assert head.classify_vector(v)[0] == "card_lost_stolen"


def test_artifact_for_another_embedder_is_refused(head: IntentHead, tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    head.save(path)
    with pytest.raises(IntentArtifactError, match="retrain"):
        IntentHead.load(path, "0" * 64)


def test_corrupt_or_missing_artifact(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(IntentArtifactError, match="not a ragpacer intent artifact"):
        IntentHead.load(bad)
    with pytest.raises(IntentArtifactError, match="intents train"):
        IntentHead.load(tmp_path / "absent.npz")


def test_out_of_scope_queries_are_out_of_scope_or_low_confidence(
        embedder: Embedder, head: IntentHead) -> None:
    clf = EmbeddingIntentClassifier(embedder, head)
    for q in ["what is the capital of mongolia", "tell me a joke about cats",
              "recommend a good pizza recipe"]:
        label, confidence = clf.classify(q)
        assert label == "out_of_scope" or confidence < 0.5, q
    for q in ["my card was stolen on the train", "how do I turn off two factor authentication"]:
        assert clf.classify(q)[1] >= 0.5, q


@pytest.mark.parametrize("query", ["x" * 20_000, "我的银行卡丢了怎么办", "بطاقتي مسروقة", "🙂🙂🙂",
                                   "a"])
def test_odd_queries_get_an_answer_not_an_error(embedder, head, query: str) -> None:  # type: ignore[no-untyped-def]
    label, conf = EmbeddingIntentClassifier(embedder, head).classify(query)
    assert label in head.labels and 0.0 <= conf <= 1.0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"text,label\nhello,greeting\nbye,\n", r":3: empty label"),
        (b"text,label\nhello,greeting\ntext,label\n", r":3: duplicate header"),
        (b"text,label\nhello,greeting\ncaf\xe9,greeting\n", r"not UTF-8"),
        (b"sentence,intent\nhello,greeting\n", r":1: the header must be"),
        (b"text,label\n", r"no examples"),
        (b"text,label\nonly one column\n", r":2: expected 2 columns"),
    ],
)
def test_bad_training_files_are_reported_clearly(tmp_path: Path, content: bytes,
                                                 match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(IntentDataError, match=match):
        read_intents(path)


def test_demo_intents_are_valid() -> None:
    rows = read_intents(demo_intents())
    labels = {lab for _, lab in rows}
    assert len(labels) == 15 and len(rows) >= 150
    assert {"out_of_scope", "not_offered"} <= labels
    # The shipped config routes every demo intent (an unmapped one would take the default).
    assert set(load_settings(ROOT / "ragpacer.yaml", environ={}).routing.intents) == labels


def test_open_intents_keep_their_confidence_far_from_every_example(
        embedder: Embedder, head: IntentHead) -> None:
    """A query far from every example is lowered in confidence, unless the label it gets
    stands for what the examples do not cover."""
    v = embedder.embed_one("what is the capital of mongolia")
    label, lowered = head.classify_vector(v)
    same, kept = head.classify_vector(v, frozenset({label}))
    assert label == same == "out_of_scope" and head.in_scope(v) < 1.0
    assert lowered < kept and lowered == pytest.approx(kept * head.in_scope(v))


def test_tokens_are_counted_whole_without_padding_or_truncation(embedder: Embedder) -> None:
    """Usage of answers no LLM made is counted with this tokenizer: the text's own tokens."""
    assert embedder.count_tokens("hello world") == 2
    assert embedder.count_tokens("hello " * 300) == 300  # past the embedding's 128
    cached = embedder.count_tokens.cache_info().currsize
    assert embedder.count_tokens("hello " * 5000) == 5000  # a pasted page: counted, not kept
    assert embedder.count_tokens.cache_info().currsize == cached

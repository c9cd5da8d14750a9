"""Semantic cache: paraphrases hit, negated or reversed meanings never do."""

from __future__ import annotations

import numpy as np
import pytest

from ragpacer.pipeline.cache import semantic
from ragpacer.pipeline.cache.semantic import SemanticCache, polarity


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_polarity_tells_antonyms_and_negations_apart() -> None:
    assert polarity("how do I enable 2FA") != polarity("how do I disable 2FA")
    assert polarity("turn on notifications") != polarity("turn off notifications")
    assert polarity("I did receive my card") != polarity("I did not receive my card")
    assert polarity("how do I enable 2FA") == polarity("please enable two factor auth")


def test_polarity_tells_different_numbers_apart() -> None:
    assert polarity("can I withdraw 600 EUR a day") != polarity("can I withdraw 400 EUR a day")
    assert polarity("is 1,000 EUR the limit") == polarity("the limit is 1000 EUR?")
    assert polarity("a fee of 0.5%") != polarity("a fee of 5%")
    assert polarity("can I withdraw 600 EUR a day") == polarity("may I withdraw 600 EUR daily")


def test_polarity_tells_one_question_from_two() -> None:
    one = "How many virtual cards can I create?"
    assert polarity(one) != polarity(
        "How many virtual cards can I create, and what is the contactless limit?")
    assert polarity(one) == polarity("How many virtual cards can I make?")
    assert polarity(one) == polarity("I lost my job, can I create virtual cards?")


def test_lookup_needs_scope_similarity_and_polarity() -> None:
    cache = SemanticCache(threshold=0.5)
    v = unit(1)
    cache.add("k1", "security|{}", v, "how do I enable 2FA")
    assert cache.lookup("security|{}", v, "how can I enable 2FA") == "k1"
    assert cache.lookup("security|{}", v, "how do I disable 2FA") is None  # same vector!
    cache.add("k2", "cards|{}", v, "can I withdraw 600 EUR a day")
    assert cache.lookup("cards|{}", v, "can I withdraw 400 EUR a day") is None
    assert cache.lookup("cards|{}", v, "can I withdraw 600 EUR a day and what does it cost "
                                       "abroad") is None  # asks one more question
    assert cache.lookup("cards|{}", v, "how can I enable 2FA") is None  # other scope
    assert cache.lookup("security|{}", unit(2), "how can I enable 2FA") is None  # far away


def test_entries_are_bounded() -> None:
    cache = SemanticCache(threshold=0.5, max_entries=3)
    for i in range(5):
        cache.add(f"k{i}", "s", unit(i), "q")
    assert cache.lookup("s", unit(0), "q") is None and cache.lookup("s", unit(4), "q") == "k4"


async def test_pipeline_semantic_hit_and_negation_guard(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url)
    if p.caching.semantic is None:
        pytest.skip("embedding classifier not prepared")
    first = await p.arun("how do I turn on two factor authentication")
    await p.caching.drain()
    para = await p.arun("how do i turn on the two factor authentication please")
    assert para.cached and para.cache_hit == "semantic" and para.answer == first.answer
    opposite = await p.arun("how do I turn off two factor authentication")
    assert not opposite.cached
    assert len(scripted.requests) == 2


async def test_an_answer_quoting_the_askers_words_is_not_matched_semantically(
        make_pipeline, scripted) -> None:
    """An answer said in part quotes the question it cannot answer: only the same text gets
    it back, never a paraphrase (another customer's words would come with it)."""
    p = make_pipeline(scripted.url, answer="extractive")
    if p.caching.semantic is None:
        pytest.skip("embedding classifier not prepared")
    whole = "Where can I see my PIN and what is the contactless limit?"
    in_part = "Do you sell gift cards and what is the contactless limit?"
    for message in (whole, in_part):
        await p.arun(message)
    await p.caching.drain()
    para_whole = await p.arun("where can i see my pin and what is the contactless limit please")
    para_part = await p.arun("do you sell gift cards and what is the contactless limit please")
    same = await p.arun(in_part)
    assert para_whole.cache_hit == "semantic"  # a paraphrase this close is matched
    assert not para_part.cached and para_part.unanswered == ["do you sell gift cards"]
    assert same.cache_hit == "exact" and same.unanswered == ["Do you sell gift cards"]


async def test_an_answer_is_matched_semantically_only_once_its_write_succeeded(
        make_pipeline, scripted) -> None:  # type: ignore[no-untyped-def]
    p = make_pipeline(scripted.url)
    if p.caching.semantic is None:
        pytest.skip("embedding classifier not prepared")
    backend = p.caching.backend

    async def lost(key: str, value: dict, ttl_s: float) -> None:
        raise ConnectionError("the write never arrived")

    backend.set = lost  # type: ignore[method-assign]
    await p.arun("how do I turn on two factor authentication")
    await p.caching.drain()
    assert len(p.caching.semantic) == 0  # nothing to point a paraphrase at
    para = await p.arun("how do i turn on the two factor authentication please")
    assert not para.cached and len(scripted.requests) == 2


@pytest.mark.parametrize("exact_rows,candidates", [(semantic.EXACT_ROWS, semantic.CANDIDATES),
                                                   (16, 8)])
def test_interleaved_adds_evictions_and_lookups_match_a_full_scan(
        exact_rows: int, candidates: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written in place, blanks compacted: the index answers as a scan of every live
    entry would, and holds at most max_entries over all scopes; also when every scope is
    searched through the sign-code prefilter (its codes moved with the rows)."""
    monkeypatch.setattr(semantic, "EXACT_ROWS", exact_rows)
    monkeypatch.setattr(semantic, "CANDIDATES", candidates)
    rng = np.random.default_rng(7)
    cache = SemanticCache(threshold=0.8, max_entries=300)
    live: dict[str, tuple[str, np.ndarray]] = {}
    for i in range(3000):
        scope = f"s{rng.integers(3)}"
        v = rng.normal(size=16).astype(np.float32)
        v /= np.linalg.norm(v)
        cache.add(f"k{i}", scope, v, "what is the fee")
        live[f"k{i}"] = (scope, v)
        while len(live) > 300:
            live.pop(next(iter(live)))
        if i % 7 == 0:  # a near-duplicate of a random live entry
            key = list(live)[rng.integers(len(live))]
            s, vec = live[key]
            probe = vec + rng.normal(scale=0.01, size=16).astype(np.float32)
            probe /= np.linalg.norm(probe)
            want = max((k for k, (sc, _) in live.items() if sc == s),
                       key=lambda k: float(live[k][1] @ probe))
            assert cache.lookup(s, probe, "what is the fee") == want
    assert len(cache) == 300


def test_a_large_scope_finds_paraphrases_among_crowded_rows_and_nothing_below_threshold() -> None:
    """20,000 rows in topics of close paraphrases (cosine ~0.7 to each other): past
    EXACT_ROWS the lookup narrows by sign code, yet finds every probe's source row (cosine
    ~0.92) and matches no probe that is only near a topic."""
    rng = np.random.default_rng(3)
    dim, n = 384, 20_000
    assert n > semantic.EXACT_ROWS

    def units(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    topics = units(rng.normal(size=(400, dim)))
    rows = units(topics[rng.integers(0, 400, n)] + 0.65 * units(rng.normal(size=(n, dim))))
    cache = SemanticCache(threshold=0.88, max_entries=n)
    for i, v in enumerate(rows):
        cache.add(f"k{i}", "s", v, "what is the fee")
    picked = rng.integers(0, n, 300)
    near = units(rows[picked] + 0.42 * units(rng.normal(size=(300, dim))))
    for probe in near:
        best = int(np.argmax(rows @ probe))
        assert rows[best] @ probe >= 0.88
        assert cache.lookup("s", probe, "what is the fee") == f"k{best}"
    others = units(topics[rng.integers(0, 400, 300)] + 0.65 * units(rng.normal(size=(300, dim))))
    for probe in others:
        if float(np.max(rows @ probe)) < 0.88:
            assert cache.lookup("s", probe, "what is the fee") is None

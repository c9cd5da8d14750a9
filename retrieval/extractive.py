"""The extractive answer: the sentences of the sources that answer the question, cited.

Every sentence of the knowledge base is embedded once (at first start, cached on disk by index
and embedder version). A request scores the sentences of its top sources against the query
vector it already has, plus the share of the query's terms each sentence contains, and keeps
the best. No model call: a few dot products over a few dozen sentences.

The best sentence's score is also the request's *evidence*: below a calibrated threshold the
help centre does not answer the question, and the pipeline says so instead of quoting
unrelated articles.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.types import Document, Hit

log = logging.getLogger("ragpacer.extractive")

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
# How much the lexical overlap weighs beside the cosine, and how much a better-ranked source
# is preferred; both were chosen on the answer-quality eval (evals/answer_quality.py).
LEXICAL_WEIGHT = 0.35
RANK_PENALTY = 0.04
SAME_SOURCE_PENALTY = 0.1
KEEP_RELATIVE = 0.7  # a further sentence must score this share of the best one
SOURCES_CONSIDERED = 3
# A prompt quotes a sentence beyond the chosen ones only within this much of the best score:
# further down they are about something else, and each costs the engine prefill time.
NEXT_BEST_MARGIN = 0.25


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text.strip()) if s.strip()]


def _key(title: str, sentence: str) -> str:
    return hashlib.blake2b(f"{title}\n{sentence}".encode(), digest_size=8).hexdigest()


def _in_context(title: str, sentence: str) -> str:
    """A sentence is embedded under its article's title: "The fee is 0.5%" alone says
    nothing about international transfers."""
    return f"{title}: {sentence}" if title else sentence


class SentenceIndex:
    """Unit vectors of every knowledge-base sentence, looked up by the sentence's text."""

    def __init__(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        self.rows = {k: i for i, k in enumerate(keys)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    @classmethod
    def build(cls, documents: Sequence[Document], embedder: Any) -> SentenceIndex:
        pairs = sorted({(d.title, s) for d in documents for s in split_sentences(d.text)})
        texts = [_in_context(t, s) for t, s in pairs]
        vectors = embedder.embed_many(texts) if texts else np.zeros((0, 384))
        return cls([_key(t, s) for t, s in pairs], vectors)

    @classmethod
    def load_or_build(cls, path: Path, documents: Sequence[Document],
                      embedder: Any) -> SentenceIndex:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls([str(k) for k in data["keys"]], data["vectors"])
        except (OSError, KeyError, ValueError):
            pass
        index = cls.build(documents, embedder)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Per process: the workers taking up a new index build this at the same time.
            tmp = path.with_suffix(f".{os.getpid()}.partial.npz")
            np.savez(tmp, keys=np.array(list(index.rows)), vectors=index.vectors)
            tmp.replace(path)
        except OSError as exc:  # a read-only home still serves; it just embeds again
            log.warning("cannot cache sentence vectors at %s: %s", path, exc)
        return index

    def vector(self, title: str, sentence: str) -> np.ndarray | None:
        row = self.rows.get(_key(title, sentence))
        return None if row is None else self.vectors[row]


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    source: int  # 1-based position among the sources: the citation number
    position: int  # order inside its source
    score: float


@dataclass(frozen=True, slots=True)
class _Candidate:
    rank: int  # 0-based position of its source
    position: int
    title: str
    text: str
    words: frozenset[str]  # its terms and its title's


@dataclass(frozen=True, slots=True)
class Asked:
    """One question of a message that asks several, and how well the sources answer it."""

    text: str
    evidence: float  # its best sentence's score for it alone
    ranked: tuple[Sentence, ...]  # every sentence scored for it alone, best first


@dataclass(frozen=True, slots=True)
class Selection:
    sentences: tuple[Sentence, ...]
    # The best sentence's score: how well the sources answer the question. None without a
    # query vector (the lexical classifier), when there is nothing calibrated to compare.
    evidence: float | None
    ranked: tuple[Sentence, ...] = ()  # every scored sentence, best first
    asked: tuple[Asked, ...] = ()  # a message that asks several questions: each of them

    def answering(self, bars: Sequence[float], k: int) -> tuple[Selection, tuple[str, ...]]:
        """For a message whose questions the sources answer only in part (some at or above
        their evidence bar in ``bars`` alone, some below): the selection of at most ``k``
        sentences for the answered ones, and the others, to be said unanswered instead of
        answered with what is nearest. Otherwise this selection, and none."""
        passes = [a.evidence >= bar for a, bar in zip(self.asked, bars, strict=True)]
        answered = [a for a, ok in zip(self.asked, passes, strict=True) if ok]
        if self.evidence is None or not answered or len(answered) == len(self.asked):
            return self, ()
        best: dict[tuple[int, int], Sentence] = {}
        for a in answered:  # each sentence at its best score for any answered question
            for s in a.ranked:
                if _at(s) not in best or s.score > best[_at(s)].score:
                    best[_at(s)] = s
        ranked = sorted(best.values(), key=lambda s: -s.score)
        firsts = [best[_at(a.ranked[0])] for a in answered]
        chosen = _diverse(ranked, k, list(dict.fromkeys(firsts))[:k])
        # A question whose best sentence is quoted for another is answered as well as the
        # sources can: it is not said to be unanswered next to its own answer.
        quoted = {_at(s) for s in chosen}
        unanswered = tuple(a.text for a, ok in zip(self.asked, passes, strict=True)
                           if not ok and _at(a.ranked[0]) not in quoted)
        if not unanswered:
            return self, ()
        return (Selection(chosen, max(a.evidence for a in answered), tuple(ranked),
                          tuple(answered)), unanswered)

    def excerpts(self, budget: int, count: Callable[[str], int]) -> dict[int, list[str]]:
        """What a prompt quotes of each source: the chosen sentences, then the next best
        that score within NEXT_BEST_MARGIN of the best, while their tokens fit ``budget``
        (the best one always), in reading order per source number."""
        picked: list[Sentence] = []
        used = 0
        chosen = set(self.sentences)
        floor = (self.ranked[0].score if self.ranked else 0.0) - NEXT_BEST_MARGIN
        for s in dict.fromkeys([*self.sentences, *self.ranked]):
            if s not in chosen and s.score < floor:
                break  # ranked best first: the rest are further below
            cost = count(s.text)
            if picked and used + cost > budget:
                continue  # a shorter one further down may still fit
            picked.append(s)
            used += cost
        out: dict[int, list[str]] = {}
        for s in sorted(picked, key=lambda s: (s.source, s.position)):
            out.setdefault(s.source, []).append(s.text)
        return out

    def answer(self) -> str:
        """The chosen sentences in reading order, each cited with its source's number."""
        ordered = sorted(self.sentences, key=lambda s: (s.source, s.position))
        return " ".join(f"{s.text} [{s.source}]" for s in ordered)


class SentenceSelector:
    def __init__(self, index: SentenceIndex | None, analyzer: Analyzer | None = None,
                 idf: Callable[[str], float] | None = None) -> None:
        self.index = index
        self.analyzer = analyzer or Analyzer()
        self.idf = idf or (lambda term: 1.0)  # rare query terms say more than common ones

    def select(self, query: str, vector: np.ndarray | None, sources: Sequence[Hit],
               max_sentences: int = 2,
               questions: Sequence[tuple[str, np.ndarray]] = ()) -> Selection:
        """The sentences that answer ``query``; with ``questions`` (the several a message
        asks, each with its vector), each question's best sentence first."""
        candidates = self._candidates(sources)
        scored = self._scored(query, vector, candidates)
        calibrated = vector is not None and self.index is not None
        if not scored:
            return Selection((), 0.0 if calibrated else None)
        # Each question's best sentence, if it answers that question about as well as the
        # best one answers the whole message (the evidence bar and the ranking stay the
        # whole message's).
        floor = KEEP_RELATIVE * max(s.score for s in scored)
        asked = tuple(self._asked(q, v, candidates) for q, v in questions)
        at = {_at(s): s for s in scored}
        chosen = list(dict.fromkeys(at[_at(a.ranked[0])] for a in asked if a.evidence >= floor))
        scored.sort(key=lambda s: -s.score)
        return Selection(_diverse(scored, max_sentences, chosen[:max_sentences]),
                         scored[0].score if calibrated else None, tuple(scored), asked)

    def _candidates(self, sources: Sequence[Hit]) -> list[_Candidate]:
        """The top sources' sentences with their terms (and their title's), analysed once for
        the message and each of its questions."""
        out: list[_Candidate] = []
        for rank, hit in enumerate(sources[:SOURCES_CONSIDERED]):
            title_terms = set(self.analyzer(hit.title))
            for pos, text in enumerate(split_sentences(hit.text)):
                out.append(_Candidate(rank, pos, hit.title, text,
                                      frozenset(self.analyzer(text)) | title_terms))
        return out

    def _scored(self, query: str, vector: np.ndarray | None,
                candidates: Sequence[_Candidate]) -> list[Sentence]:
        """Each candidate in source order, scored for ``query``."""
        weights = {t: self.idf(t) for t in self.analyzer(query)}
        total = sum(weights.values())
        scored: list[Sentence] = []
        for c in candidates:
            lexical = sum(w for t, w in weights.items() if t in c.words) / total if total else 0
            score = (self._cosine(c.title, c.text, vector) + LEXICAL_WEIGHT * lexical
                     - RANK_PENALTY * c.rank)
            scored.append(Sentence(c.text, c.rank + 1, c.position, score))
        return scored

    def _asked(self, question: str, vector: np.ndarray,
               candidates: Sequence[_Candidate]) -> Asked:
        """One question of several, scored alone (``candidates`` are never empty here)."""
        ranked = sorted(self._scored(question, vector, candidates), key=lambda s: -s.score)
        return Asked(question, ranked[0].score, tuple(ranked))

    def _cosine(self, title: str, sentence: str, vector: np.ndarray | None) -> float:
        if vector is None or self.index is None:
            return 0.0
        v = self.index.vector(title, sentence)
        return 0.0 if v is None else float(v @ vector)


def _at(sentence: Sentence) -> tuple[int, int]:
    """Where a sentence is (a sentence scored for another question is the same sentence)."""
    return sentence.source, sentence.position


def _diverse(ranked: list[Sentence], k: int,
             chosen: list[Sentence] | None = None) -> tuple[Sentence, ...]:
    """The best sentence (or those already ``chosen``), then the best of the rest with a
    sentence from a source already quoted counting for less: a question about two things
    often needs two articles."""
    chosen = list(chosen or ranked[:1])
    rest = [s for s in ranked if s not in chosen and s.score >= KEEP_RELATIVE * ranked[0].score]
    while rest and len(chosen) < k:
        quoted = {s.source for s in chosen}
        best = max(rest, key=lambda s: s.score - (SAME_SOURCE_PENALTY if s.source in quoted
                                                  else 0.0))
        chosen.append(best)
        rest.remove(best)
    return tuple(chosen)

"""Text analysis shared by the BM25 index, its oracle in tests, and the query side."""

from __future__ import annotations

import re

import snowballstemmer

from ragpacer.retrieval.memo import ShortTextCache

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)
# Negations carry meaning in a help centre ("not received"): keep them out of the stoplist.
# The pieces the tokenizer leaves of contractions and possessives ("what's", "don't",
# "I'm") say nothing, and "s" would match any document with a possessive.
STOPWORDS = (STOPWORDS - {"no", "nor", "not"}) | {"s", "t", "d", "ll", "m", "re", "ve"}


_SNOWBALL = snowballstemmer.stemmer("english")


# Words up to this long are cached (a vocabulary's words; not a 2,000-letter "word").
CACHED_WORD_CHARS = 40

# Snowball (Porter 2) English stemming, cached per word.
stem: ShortTextCache[str] = ShortTextCache(_SNOWBALL.stemWord, 262_144, CACHED_WORD_CHARS)


class Analyzer:
    """Lowercase, split on non-letters/digits, drop stopwords, optionally stem."""

    def __init__(self, *, stemming: bool = True, stopwords: frozenset[str] = STOPWORDS) -> None:
        self.stemming = stemming
        self.stopwords = stopwords

    def __call__(self, text: str) -> list[str]:
        tokens = (t for t in _TOKEN.findall(text.lower()) if t not in self.stopwords)
        return [stem(t) for t in tokens] if self.stemming else list(tokens)

    def __repr__(self) -> str:
        return f"Analyzer(stemming={self.stemming})"

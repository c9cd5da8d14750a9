"""Retrieval: analysis, BM25, filters, documents."""

from ragpacer.retrieval.analyzer import Analyzer
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.corpus import CorpusError, load_jsonl
from ragpacer.retrieval.filters import merge_filters, normalise_filters
from ragpacer.retrieval.types import Document, Hit

__all__ = [
    "Analyzer",
    "BM25Index",
    "CorpusError",
    "Document",
    "Hit",
    "load_jsonl",
    "merge_filters",
    "normalise_filters",
]

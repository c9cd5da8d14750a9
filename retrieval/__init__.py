"""Retrieval: analysis, BM25, filters, documents."""

from retrieval.analyzer import Analyzer
from retrieval.bm25 import BM25Index
from retrieval.corpus import CorpusError, load_jsonl
from retrieval.filters import merge_filters, normalise_filters
from retrieval.types import Document, Hit

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

"""A memo for text functions on the hot path whose cache must stay small in bytes too."""

from __future__ import annotations

from collections.abc import Callable
from functools import _CacheInfo, lru_cache
from typing import Generic, TypeVar

T = TypeVar("T")


class ShortTextCache(Generic[T]):
    """``fn`` memoised for texts up to ``max_chars``; longer ones are computed each time. An
    LRU cache holds its keys: ``maxsize`` pasted pages (or 2,000-letter "words") sent by a
    caller would fill memory, however few entries it keeps."""

    def __init__(self, fn: Callable[[str], T], maxsize: int, max_chars: int) -> None:
        self.fn = fn
        self.max_chars = max_chars
        self._cached = lru_cache(maxsize=maxsize)(fn)

    def __call__(self, text: str) -> T:
        return self._cached(text) if len(text) <= self.max_chars else self.fn(text)

    def cache_info(self) -> _CacheInfo:
        return self._cached.cache_info()

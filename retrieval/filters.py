"""Metadata filters: validated once at the edge, then applied by every backend the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ragpacer.pipeline.core.errors import InvalidFiltersError
from ragpacer.retrieval.types import Hit

Filters = dict[str, tuple[str, ...]]


def normalise_filters(raw: Mapping[str, Any] | None, allowed: Iterable[str]) -> Filters:
    """``{"product": "cards"}`` or ``{"product": ["cards", "loans"]}`` -> field -> values."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidFiltersError(f"filters must be an object, got {type(raw).__name__}")
    allowed = set(allowed)
    out: Filters = {}
    for key, value in raw.items():
        if key not in allowed:
            raise InvalidFiltersError(
                f"unknown filter field {key!r}; filterable fields: {sorted(allowed)}"
            )
        values = value if isinstance(value, list | tuple) else [value]
        if not values:
            raise InvalidFiltersError(f"filter {key!r} has an empty list of values")
        for v in values:
            if not isinstance(v, str | int | bool) or isinstance(v, float):
                raise InvalidFiltersError(
                    f"filter {key!r} values must be strings, numbers or booleans, got {v!r}"
                )
        out[key] = tuple(str(v) for v in values)
    return out


def merge_filters(route: Filters, request: Filters) -> Filters:
    """Route filters narrow what the request may see: both must hold."""
    merged = dict(request)
    for key, values in route.items():
        if key in merged:
            both = tuple(v for v in merged[key] if v in values)
            merged[key] = both  # an empty tuple matches nothing, on purpose
        else:
            merged[key] = values
    return merged


def matches(metadata: Mapping[str, Any], filters: Filters) -> bool:
    """Every filtered key has one of its values; a list-valued key matches through any
    element (as Qdrant matches an array payload)."""
    def has(value: Any, wanted: tuple[str, ...]) -> bool:
        return any(str(v) in wanted for v in value) if isinstance(value, list) \
            else str(value) in wanted

    return all(has(metadata.get(k), values) for k, values in filters.items())


# A hit of the route's own documents moves up this many places: it wins over comparable hits,
# never over a clearly better one from elsewhere.
BOOST_RANKS = 2


def boost(hits: list[Hit], filters: Filters, k: int, ranks: int = BOOST_RANKS) -> list[Hit]:
    """The top ``k`` of ``hits`` (best first) with those matching ``filters`` moved up."""
    if not filters:
        return hits[:k]
    order = sorted(range(len(hits)),
                   key=lambda i: i - (ranks if matches(hits[i].metadata, filters) else 0))
    return [hits[i] for i in order[:k]]

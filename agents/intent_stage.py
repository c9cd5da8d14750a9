"""The intent stage: classify, then pick the route from the routing table."""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.stage import FallbackKind, StageBase, Update
from ragpacer.pipeline.core.state import RequestState


class IntentClassifier(Protocol):
    def classify(self, query: str) -> tuple[str | None, float]: ...


@runtime_checkable
class VectorIntentClassifier(IntentClassifier, Protocol):
    """A classifier on the query embedding: the vector it computes once also serves the
    semantic cache and the dense retrieval."""

    def embed(self, query: str) -> np.ndarray: ...

    async def aembed(self, query: str, deadline: Deadline | None = None) -> np.ndarray: ...

    def classify_vector(self, vector: np.ndarray) -> tuple[str, float]: ...

    def scope(self, vector: np.ndarray) -> float: ...


class IntentRouter(StageBase):
    name: ClassVar[str] = "intent"
    fallbacks: ClassVar[frozenset[FallbackKind]] = frozenset({"default"})

    def __init__(self, classifier: IntentClassifier) -> None:
        self.classifier = classifier
        # Resolved once: an isinstance check on a protocol is too slow for every request.
        self.vectors = classifier if isinstance(classifier, VectorIntentClassifier) else None

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        routing = ctx.settings.routing
        if state.get("decline"):  # declined before classification (an injection attempt)
            return {"route": routing.decline_route, "intent": None, "intent_confidence": 0.0,
                    "low_confidence": False}
        update: Update = {}
        if self.vectors is not None:  # computed once; the cache and the retriever reuse it
            vector = state.get("query_vector")
            if vector is None:
                vector = update["query_vector"] = await self.vectors.aembed(state["query"],
                                                                            ctx.cutoff)
            intent: str | None
            intent, confidence = self.vectors.classify_vector(vector)
            if routing.scope_threshold > 0 and (  # far from every intent: out of scope
                    self.vectors.scope(vector) < routing.scope_threshold):
                update.update(intent=intent, intent_confidence=round(confidence, 4),
                              low_confidence=True, route=routing.decline_route,
                              decline="out_of_scope")
                return update
        else:
            intent, confidence = self.classifier.classify(state["query"])
        route, low = routing.route_of(intent, confidence)
        update.update(intent=intent, intent_confidence=round(confidence, 4),
                      low_confidence=low, route=route)
        return update

    def fallback(self, kind: FallbackKind, state: RequestState, ctx: RunContext) -> Update:
        return {"route": ctx.settings.routing.default_route, "intent": None,
                "intent_confidence": 0.0, "low_confidence": True}

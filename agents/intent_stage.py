"""The intent stage: classify, then pick the route from the routing table."""

from __future__ import annotations

from typing import ClassVar, Protocol

from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.stage import StageBase, Update
from ragpacer.pipeline.core.state import RequestState


class IntentClassifier(Protocol):
    def classify(self, query: str) -> tuple[str | None, float]: ...


class IntentRouter(StageBase):
    name: ClassVar[str] = "intent"
    fallbacks: ClassVar[frozenset[str]] = frozenset({"default"})

    def __init__(self, classifier: IntentClassifier) -> None:
        self.classifier = classifier

    async def __call__(self, state: RequestState, ctx: RunContext) -> Update:
        routing = ctx.settings.routing
        if state.get("decline"):  # declined before classification (an injection attempt)
            return {"route": routing.decline_route, "intent": None, "intent_confidence": 0.0,
                    "low_confidence": False}
        update: Update = {}
        aembed = getattr(self.classifier, "aembed", None)
        if aembed is not None:  # computed once; the cache and the retriever reuse it
            vector = state.get("query_vector")
            if vector is None:
                vector = update["query_vector"] = await aembed(state["query"], ctx.cutoff)
            intent, confidence = self.classifier.classify_vector(vector)  # type: ignore[attr-defined]
            if routing.scope_threshold > 0 and (  # far from every intent: out of scope
                    self.classifier.scope(vector) < routing.scope_threshold):  # type: ignore[attr-defined]
                update.update(intent=intent, intent_confidence=round(confidence, 4),
                              low_confidence=True, route=routing.decline_route,
                              decline="out_of_scope")
                return update
        else:
            intent, confidence = self.classifier.classify(state["query"])
        low = intent is None or confidence < routing.min_confidence
        route = routing.default_route if low else routing.intents.get(intent, routing.default_route)  # type: ignore[arg-type]
        update.update(intent=intent, intent_confidence=round(confidence, 4),
                      low_confidence=low, route=route)
        return update

    def fallback(self, kind: str, state: RequestState, ctx: RunContext) -> Update:
        return {"route": ctx.settings.routing.default_route, "intent": None,
                "intent_confidence": 0.0, "low_confidence": True}

"""Agents: intent classification and routing."""

from ragpacer.agents.intent_stage import IntentClassifier, IntentRouter
from ragpacer.agents.lexical import IntentDataError, LexicalIntentClassifier, read_intents

__all__ = [
    "IntentClassifier",
    "IntentDataError",
    "IntentRouter",
    "LexicalIntentClassifier",
    "read_intents",
]

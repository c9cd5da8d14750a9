"""Agents: intent classification and routing."""

from agents.intent_stage import IntentClassifier, IntentRouter
from agents.lexical import IntentDataError, LexicalIntentClassifier, read_intents

__all__ = [
    "IntentClassifier",
    "IntentDataError",
    "IntentRouter",
    "LexicalIntentClassifier",
    "read_intents",
]

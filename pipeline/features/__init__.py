"""Precomputed customer features (Feast) and request-time data (Redis)."""

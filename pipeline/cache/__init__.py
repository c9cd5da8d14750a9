"""The response cache: exact and semantic lookups, before the graph."""

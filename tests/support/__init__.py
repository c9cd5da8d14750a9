"""Helpers the tests share: servers on loopback, probes of the real services."""

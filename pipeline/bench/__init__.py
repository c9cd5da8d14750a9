"""Measuring ragpacer: the load generator, its statistics, and the answer-quality harness."""

"""Observability: live tracing (OpenTelemetry, Langfuse), Prometheus metrics, trace review."""

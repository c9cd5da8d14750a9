"""The OpenAI-compatible HTTP surface."""

from ragpacer.pipeline.serving.app import create_app

__all__ = ["create_app"]

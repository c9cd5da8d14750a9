"""Schemathesis against the server's own OpenAPI schema: no 5xx but deliberate 503s, and no
traceback in any response. The app runs in-process over ASGI with a scripted LLM."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings

from ragpacer.pipeline.sdk import Pipeline
from ragpacer.pipeline.serving import create_app
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.resources import RESOURCES

_LLM = ScriptedLLM(Script()).__enter__()  # lives for the test session (a daemon thread)
APP = create_app(Pipeline(make_settings(_LLM.url, tracing={"exporter": "none"}),
    resources=RESOURCES),
                 manage_lifecycle=False)
# CI's size per endpoint; RAGPACER_FUZZ_EXAMPLES=2000 for a long run outside CI.
EXAMPLES = int(os.environ.get("RAGPACER_FUZZ_EXAMPLES", "40"))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_with_a_5xx_or_a_traceback(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    assert response.status_code < 500 or response.status_code == 503, (
        response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert "error" in response.json()

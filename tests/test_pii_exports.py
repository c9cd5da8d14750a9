"""Nothing personal leaves through the side doors: every log record, every exported span
(JSONL file and OTLP receiver) and the metrics page are scanned for the PII a request carried,
including PII an upstream server echoes back in an error message."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest

from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import serving
from tests.support.otlp import Receiver
from tests.support.resources import RESOURCES

EMAIL, CARD, PHONE, IBAN = ("jane.doe@example.com", "4111 1111 1111 1111", "+44 7700 900123",
                            "GB82 WEST 1234 5698 7654 32")
QUERY = (f"my card {CARD} was charged twice, what does an overdraft cost? mail {EMAIL} "
         f"or call {PHONE}; IBAN {IBAN}")


def leaks(text: str) -> list[str]:
    flat = re.sub(r"[\s-]", "", text)
    found = [s for s in (EMAIL, CARD, PHONE, IBAN) if s in text]
    found += [s for s in (CARD, PHONE, IBAN) if re.sub(r"[\s-]", "", s) in flat]
    return found


@pytest.mark.parametrize("pii_action", ["redact", "flag"])
def test_logs_spans_and_metrics_never_carry_pii(pii_action: str, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = Receiver()
    answer = Script(tokens=["Write ", "to ", f"{EMAIL} ", "or ", f"call {PHONE}."])
    # A server that fails and quotes the prompt back in its error, as some do.
    echo = Script(status=400, error_message=f"bad request: {QUERY}")
    jsonl = tmp_path / "traces.jsonl"
    with ScriptedLLM(answer) as good, ScriptedLLM(echo) as bad:
        for url, tracing in (
            (good.url, {"exporter": "jsonl", "jsonl_path": str(jsonl)}),
            (bad.url, {"exporter": "otlp", "export_timeout_s": 1,
                       "endpoint": f"http://127.0.0.1:{receiver.port}/v1/traces"}),
        ):
            p = Pipeline(make_settings(url, tracing=tracing, cache={"enabled": False},
                                       guardrails={"pii_action": pii_action,
                                                   "pii_allowlist": []}), resources=RESOURCES)
            with serving(p) as base:
                for stream in (False, True):
                    r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
                        "model": "ragpacer", "stream": stream, "user": "c-0001",
                        "messages": [{"role": "user", "content": QUERY}]})
                    assert r.status_code == 200
                metrics = httpx.get(f"{base}/metrics", timeout=5).text
                assert "ragpacer_requests" in metrics or "ragpacer_" in metrics
                assert not leaks(metrics)
    spans = jsonl.read_text()
    assert spans.strip(), "the JSONL exporter wrote spans"
    assert not leaks(spans), leaks(spans)
    assert receiver.spans(), "the OTLP receiver got spans"
    assert not leaks(str(receiver.spans()))
    assert any("bad request" in r.getMessage() for r in caplog.records), \
        "the upstream error was logged (redacted)"
    logged = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert not leaks(logged), leaks(logged)
    receiver.server.shutdown()

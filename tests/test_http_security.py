"""API keys, rate limits, /metrics, and client disconnects over real HTTP."""

from __future__ import annotations

import hashlib
import logging
import time

import httpx
import openai
import pytest

from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import serving
from tests.support.resources import RESOURCES

KEY = "rp-test-key-0123456789"
HASHED = "sha256:" + hashlib.sha256(b"rp-other-key").hexdigest()
BODY = {
    "model": "ragpacer",
    "messages": [{"role": "user", "content": "what does an overdraft cost"}],
}


@pytest.fixture(scope="module")
def secured():  # type: ignore[no-untyped-def]
    with (
        ScriptedLLM(Script()) as llm,
        serving(
            Pipeline(
                make_settings(
                    llm.url,
                    server={
                        "api_keys": [KEY, HASHED],
                        "rate_limit_per_s": 0.2,
                        "rate_limit_burst": 3,
                    },
                ), resources=RESOURCES
            )
        ) as base,
    ):
        yield base


def test_missing_or_wrong_key_is_401_in_openai_format(secured: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        r = httpx.post(f"{secured}/v1/chat/completions", json=BODY, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert KEY not in r.text


def test_plain_and_hashed_keys_work_and_the_official_client_too(secured: str) -> None:
    r = httpx.post(
        f"{secured}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": "Bearer rp-other-key"},
    )
    assert r.status_code == 200
    client = openai.OpenAI(base_url=f"{secured}/v1", api_key=KEY, max_retries=0)
    assert client.models.list().data[0].id == "ragpacer"


def test_over_the_rate_is_429_with_retry_after(secured: str) -> None:
    headers = {"Authorization": "Bearer rp-other-key"}
    codes = [httpx.get(f"{secured}/v1/models", headers=headers) for _ in range(5)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"]["type"] == "rate_limit_exceeded"


def test_metrics_need_a_key_and_show_stages(secured: str) -> None:
    assert httpx.get(f"{secured}/metrics").status_code == 401
    httpx.post(
        f"{secured}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {KEY}"}
    )
    text = httpx.get(f"{secured}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for name in (
        "ragpacer_stage_duration_seconds_bucket",
        "ragpacer_cache_lookups_total",
        "ragpacer_requests_in_flight",
        "ragpacer_stage_budget_breaches_total",
        "ragpacer_llm_completion_tokens_total",
    ):
        assert name in text, name


def test_keys_never_reach_the_logs(secured: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    httpx.post(
        f"{secured}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": "Bearer rp-leaked-if-logged"},
    )
    assert "rp-leaked-if-logged" not in caplog.text


def test_redis_rate_limit_is_shared_between_servers() -> None:
    import redis

    try:
        redis.Redis(socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    key = f"rp-shared-{time.time()}"
    settings = dict(
        server={"api_keys": [key], "rate_limit_per_s": 0.1, "rate_limit_burst": 4},
        redis_url="redis://127.0.0.1:6379/0",
    )
    with (
        ScriptedLLM() as llm,
        serving(Pipeline(make_settings(llm.url, **settings), resources=RESOURCES)) as a,
        serving(Pipeline(make_settings(llm.url, **settings), resources=RESOURCES)) as b,
    ):
        headers = {"Authorization": f"Bearer {key}"}
        codes = [
            httpx.get(f"{base}/v1/models", headers=headers).status_code
            for base in (a, b, a, b, a, b)
        ]
    assert codes[:4] == [200] * 4 and codes[4:] == [429, 429]


def test_a_disconnecting_streaming_client_cancels_its_work() -> None:
    slow = Script(tokens=[f"t{i} " for i in range(200)], token_delay_s=0.05)
    with (
        ScriptedLLM(slow) as llm,
        serving(
            Pipeline(
                make_settings(
                    llm.url, deadline_ms=20_000, stages={"generation": {"budget_ms": 15_000}}
                ), resources=RESOURCES
            )
        ) as base,
    ):
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10
        ) as r:
            for line in r.iter_lines():
                if "t2" in line:
                    break  # hang up mid-stream
        assert llm.wait_for_disconnect(5), "the LLM request must be abandoned too"
        assert llm.completed == 0


def test_readiness_reports_redis() -> None:
    from tests.support.http import free_port

    with ScriptedLLM() as llm, serving(Pipeline(make_settings(
            llm.url, redis_url=f"redis://127.0.0.1:{free_port()}/0"), resources=RESOURCES)) as base:
        ready = httpx.get(f"{base}/readyz").json()
    assert ready["checks"]["redis"].startswith("down") and ready["status"] == "degraded"
    assert ready["cache_persistence"] == "unknown"

"""Fault injection over real sockets: each dependency down, slow (just under and well over its
budget) and cut mid-response, through the HTTP endpoint.

A TCP proxy (tests/faultproxy.py) sits between ragpacer and the real Redis, the LLM server,
the Feast Redis online store, an HTTP tool, the Qdrant server API and the OTLP collector.
Each case checks the answer arrives within the deadline plus a slack (the faults themselves
last seconds, so an unbounded wait could not pass), that the degraded stage is named, that the
status is right, and that clearing the fault is picked up without a restart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import ROOT, make_settings
from tests.faultproxy import FaultProxy
from tests.loopback import json_peer
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import serving
from tests.support.otlp import Receiver
from tests.support.redis import redis_up
from tests.support.resources import RESOURCES

pytestmark = pytest.mark.faults
DEADLINE_MS = 1500
SLACK_MS = 600  # generous for a shared 2-core machine; every fault below lasts >= 5 s
LONG = 8.0  # seconds: a fault that would blow any deadline if it were waited out
RAG = "what does an overdraft cost"
PERSONAL = "show my recent transactions"
FAST = {"retrieval": {"mode": "bm25"}, "routing": {"classifier": "lexical"}}


def ask(base: str, query: str = RAG, user: str | None = None,
        deadline_ms: float = DEADLINE_MS) -> tuple[int, dict[str, Any], float]:
    body: dict[str, Any] = {"model": "ragpacer", "deadline_ms": deadline_ms,
                            "messages": [{"role": "user", "content": query}]}
    if user:
        body["user"] = user
    t0 = time.monotonic()
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    return r.status_code, r.json(), (time.monotonic() - t0) * 1000


def answered(base: str, query: str = RAG, user: str | None = None) -> dict[str, Any]:
    """A 200 with an answer inside the deadline; returns the ragpacer block."""
    status, body, ms = ask(base, query, user)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"], body
    assert ms < DEADLINE_MS + SLACK_MS, (ms, body["ragpacer"]["stages"])
    return body["ragpacer"]


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(Script(token_delay_s=0.01)) as server:
        yield server


# -- the response cache: Redis -------------------------------------------------------------

@pytest.mark.redis
def test_redis_cache_down_slow_cut_then_recovered(llm: ScriptedLLM) -> None:
    if not redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    with FaultProxy(6379) as proxy:
        p = Pipeline(make_settings(llm.url, redis_url=f"redis://127.0.0.1:{proxy.port}/5",
                                   stages={"cache": {"budget_ms": 40}}, **FAST),
                                       resources=RESOURCES)
        with serving(p) as base:
            first = answered(base)
            assert not first["degraded"]
            time.sleep(0.3)  # the write is off the request path
            proxy.set(delay_s=0.005)  # just under: still a hit
            assert answered(base)["cached"]
            for fault in ({"delay_s": 0.06}, {"delay_s": LONG}, {"cut_after_bytes": 2}):
                proxy.set(**fault)  # just over its 40 ms budget, far over, cut
                info = answered(base)
                assert not info["cached"] and "cache" in info["degraded"], (fault, info)
                proxy.clear()
                time.sleep(1.1)  # the circuit's first backoff (0.5 s, doubling) runs out
            proxy.down()
            assert "cache" in answered(base)["degraded"]
            proxy.up()
            time.sleep(4.1)  # backoff after three failures: 0.5 + 1 + 2 s at most
            assert answered(base)["cached"], "recovered without a restart"


# -- the LLM engine -------------------------------------------------------------------------

def test_llm_down_slow_cut_then_recovered(llm: ScriptedLLM) -> None:
    port = int(llm.url.split(":")[2].split("/")[0])
    with FaultProxy(port) as proxy:
        p = Pipeline(make_settings(f"http://127.0.0.1:{proxy.port}/v1",
                                   cache={"enabled": False}, **FAST), resources=RESOURCES)
        with serving(p) as base:
            assert answered(base)["answer_kind"] == "llm"
            proxy.set(delay_s=0.02)  # just under: slower, still the model's answer
            assert answered(base)["answer_kind"] == "llm"

            for delay in (DEADLINE_MS / 1000 + 0.1, LONG):  # just over the deadline, far over
                proxy.set(delay_s=delay)  # no token before the cut-off -> extractive
                info = answered(base)
                assert info["answer_kind"] == "extractive" and "generation" in info["degraded"]

            proxy.set(cut_after_bytes=400)  # headers and a token or two, then the socket dies
            info = answered(base)
            assert "generation" in info["degraded"] or info["truncated"], info

            proxy.down()
            info = answered(base)
            assert info["answer_kind"] == "extractive" and "generation" in info["degraded"]
            proxy.up()
            proxy.clear()
            assert answered(base)["answer_kind"] == "llm", "recovered without a restart"


def test_no_fallback_means_503_in_openai_format(llm: ScriptedLLM) -> None:
    with FaultProxy(1) as dead:  # upstream port 1: every connection is refused
        p = Pipeline(make_settings(f"http://127.0.0.1:{dead.port}/v1", cache={"enabled": False},
                                   stages={"generation": {"fallback": "fail"}}, **FAST),
                                       resources=RESOURCES)
        with serving(p) as base:
            status, body, ms = ask(base)
    assert status == 503 and ms < DEADLINE_MS + SLACK_MS
    assert body["error"]["type"] == "service_unavailable"
    assert "generation" in body["error"]["message"]
    assert "Traceback" not in str(body) and "127.0.0.1" not in str(body)


# -- Feast's Redis online store and request-time data ---------------------------------------

@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("feast") / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", target,
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    return target


@pytest.mark.redis
def test_feast_online_store_down_slow_then_recovered(llm: ScriptedLLM, feast_repo: Path) -> None:
    if not redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    from ragpacer.pipeline.features.stage import materialize

    direct = make_settings(llm.url, feast_repo=str(feast_repo), redis_url="redis://127.0.0.1:6379/0",
                           features={"enabled": True, "online_store": "redis"})
    materialize(direct, demo=True)
    with FaultProxy(6379) as proxy:
        p = Pipeline(make_settings(llm.url, feast_repo=str(feast_repo),
                                   redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                                   features={"enabled": True, "online_store": "redis"},
                                   cache={"enabled": False},
                                   stages={"features": {"budget_ms": 100}}, **FAST),
                                       resources=RESOURCES)
        with serving(p) as base:
            assert "features" not in answered(base, PERSONAL, "c-0001")["degraded"]
            proxy.set(delay_s=0.01)
            assert "features" not in answered(base, PERSONAL, "c-0001")["degraded"]
            for delay in (0.15, LONG):  # just over its 100 ms budget, far over
                proxy.set(delay_s=delay)
                info = answered(base, PERSONAL, "c-0001")
                rec = next(s for s in info["stages"] if s["name"] == "features")
                assert rec["outcome"] == "timeout" and rec["fallback"] == "default"
            proxy.down()
            assert "features" in answered(base, PERSONAL, "c-0001")["degraded"]
            proxy.up()
            proxy.clear()
            for _ in range(20):  # redis-py reconnects on the next call; no restart needed
                if "features" not in answered(base, PERSONAL, "c-0001")["degraded"]:
                    break
                time.sleep(0.25)
            else:
                pytest.fail("the feature store never recovered")


# -- an HTTP tool ---------------------------------------------------------------------------

def test_http_tool_down_slow_then_recovered(llm: ScriptedLLM) -> None:
    with json_peer(lambda path, headers: {"status": "active"}) as peer:
        port = int(peer.rsplit(":", 1)[1])
        with FaultProxy(port) as proxy:
            routes = {"account_activity": {"stages": ["tools"], "tools": ["account_service"]}}
            p = Pipeline(make_settings(
                llm.url, cache={"enabled": False}, features={"enabled": False},
                tools={"http_url": f"http://127.0.0.1:{proxy.port}/accounts",
                       "http_timeout_s": 0.15},
                retrieval={"mode": "bm25"},
                routing={"classifier": "lexical", "routes": routes}), resources=RESOURCES)
            with serving(p) as base:
                def tool_outcome() -> str:
                    info = answered(base, PERSONAL, "c-0001")
                    rec = next(s for s in info["stages"] if s["name"] == "tools")
                    return "ok" if "tools" not in info["degraded"] else rec["detail"] or "degraded"

                assert tool_outcome() == "ok"
                proxy.set(delay_s=0.03)  # under its 150 ms timeout
                assert tool_outcome() == "ok"
                for delay in (0.2, LONG):  # just over its 150 ms timeout, far over
                    proxy.set(delay_s=delay)
                    assert "account_service" in tool_outcome()
                proxy.set(cut_after_bytes=10)
                assert "account_service" in tool_outcome()
                proxy.down()
                assert "account_service" in tool_outcome()
                proxy.up()
                proxy.clear()
                assert tool_outcome() == "ok", "recovered without a restart"


# -- the vector store: the Qdrant server backend --------------------------------------------

def test_qdrant_server_down_or_slow_falls_back_to_bm25(llm: ScriptedLLM) -> None:
    from tests.support.qdrant import FakeQdrant

    qdrant = FakeQdrant()
    with FaultProxy(qdrant.server.server_address[1]) as proxy:
        p = Pipeline(make_settings(
            llm.url, cache={"enabled": False},
            retrieval={"backend": "server", "qdrant_url": f"http://127.0.0.1:{proxy.port}",
                       "mode": "fusion"},
            stages={"retrieval": {"budget_ms": 300}}), resources=RESOURCES)
        with serving(p) as base:
            ok = answered(base)
            assert "retrieval" not in ok["degraded"]
            for fault in ({"delay_s": 0.4}, {"delay_s": LONG}, {"cut_after_bytes": 20}):
                proxy.set(**fault)  # just over its 300 ms budget, far over, cut
                info = answered(base)
                rec = next(s for s in info["stages"] if s["name"] == "retrieval")
                assert rec["fallback"] == "cheaper" and info["sources"], (fault, rec)
            proxy.clear()
            proxy.down()
            assert "retrieval" in answered(base)["degraded"]
            proxy.up()
            assert "retrieval" not in answered(base)["degraded"], "recovered without a restart"
    qdrant.server.shutdown()


# -- the trace exporter ---------------------------------------------------------------------

def test_trace_collector_hanging_or_down_costs_nothing_and_recovers(llm: ScriptedLLM) -> None:
    receiver = Receiver()
    with FaultProxy(receiver.port) as proxy:
        p = Pipeline(make_settings(llm.url, cache={"enabled": False}, tracing={
            "exporter": "otlp", "export_timeout_s": 1,
            "endpoint": f"http://127.0.0.1:{proxy.port}/v1/traces"}, **FAST), resources=RESOURCES)
        with serving(p) as base:
            for fault in ({"hang": True}, {"cut_after_bytes": 5}):
                proxy.set(**fault)
                assert not answered(base)["degraded"]
            proxy.down()
            assert not answered(base)["degraded"]
            proxy.up()
            proxy.clear()
            trace_id = answered(base)["trace_id"]
            for _ in range(100):  # the batch processor flushes every 0.5 s
                if any(s.trace_id.hex() == trace_id for s in receiver.spans()):
                    break
                time.sleep(0.1)
            else:
                pytest.fail("spans never reached the recovered collector")
    receiver.server.shutdown()

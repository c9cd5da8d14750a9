"""Two managed vLLM replicas behind the balancing client: kill -9 of one under load costs no
answer, and the supervisor brings it back into the rotation."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ragpacer.pipeline.llm.engine import _group_alive
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import ROOT, make_settings
from tests.support.resources import RESOURCES

pytestmark = pytest.mark.llm
PORT = 8181
URLS = [f"http://127.0.0.1:{PORT + i}/v1" for i in range(2)]
QUESTIONS = ["what does an overdraft cost", "how do I order a new card",
             "what does an international transfer cost", "can I open a joint account"]


def replica_calls(p: Pipeline, url: str) -> float:
    """Calls the replica answered (the request's metrics)."""
    return p.metrics.replica_calls.get("smollm2", url)


def calls_sent(p: Pipeline, url: str) -> int:
    """Calls the client sent to the replica, answered or cut at the deadline: on a slow CPU
    under load a call can be cut before its first token, and still went there."""
    replicas = p.llm.replicas(p.settings.llm.model("smollm2")).replicas
    return next(r.calls for r in replicas if r.url == url)


async def test_killing_one_replica_under_load_loses_no_answer() -> None:
    p = Pipeline(make_settings(
        URLS[0], home=str(ROOT / ".ragpacer"), cache={"enabled": False},
        llm={"engine": "managed", "managed": {"port": PORT, "kind": "vllm", "replicas": 2},
             "models": [{"name": "smollm2", "url": URLS[0], "urls": URLS, "max_tokens": 48}]}),
        resources=RESOURCES)
    await p.astart()
    assert p.engines is not None and len(p.engines.supervisors) == 2
    victim = p.engines.engines[0]
    old = victim.proc.pid
    results = []

    async def caller(n: int) -> None:
        for i in range(n):
            results.append(await p.arun(QUESTIONS[i % len(QUESTIONS)], deadline_ms=3000))

    load = asyncio.gather(*(caller(6) for _ in range(8)))
    await asyncio.sleep(1.0)
    os.kill(old, signal.SIGKILL)
    sent = calls_sent(p, URLS[1])
    await load
    assert len(results) == 48 and all(r.answer for r in results)
    assert calls_sent(p, URLS[1]) > sent, "the live replica takes the calls after the kill"
    sup = p.engines.supervisors[0]
    for _ in range(360):
        if sup.state == "up" and sup.restarts == 1:
            break
        await asyncio.sleep(0.5)
    assert sup.state == "up" and sup.restarts == 1, sup.status()
    assert not _group_alive(old), "the killed replica left a process behind"
    # Readmitted when its model list answers again, not after its breaker's backoff. Calls
    # go to the LLM again once the TTFT it learned under the load allows (one every 2 s tries
    # the first guess), to each replica in turn.
    before = replica_calls(p, URLS[0])
    give_up = asyncio.get_running_loop().time() + 90
    i = 0
    while replica_calls(p, URLS[0]) <= before:
        assert asyncio.get_running_loop().time() < give_up, "the restarted replica answers again"
        await p.arun(QUESTIONS[i % len(QUESTIONS)], deadline_ms=10_000)
        await asyncio.sleep(0.5)
        i += 1
    restarted = p.llm.replicas(p.settings.llm.model("smollm2")).replicas[0]
    assert restarted.readmitted >= 1, "readmitted by its model list, not by a probe call"
    groups = [e.proc.pid for e in p.engines.engines]
    await p.aclose()
    assert not any(_group_alive(g) for g in groups)

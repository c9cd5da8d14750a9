"""`ragpacer serve` with two worker processes on one port, sharing Redis: a cached answer
written through one worker is served by the other, the rate limit holds across them, and a
killed worker is replaced while the other keeps answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from evals.server_process import served
from tests.conftest import ROOT
from tests.support.redis import redis_up

pytestmark = pytest.mark.processes

REDIS = "redis://127.0.0.1:6379/7"
RATE, BURST = 2.0, 10


def ask(url: str, key: str, question: str) -> httpx.Response:
    # A new connection per request: the kernel hands each to whichever worker accepts first.
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                      json={"model": "ragpacer",
                            "messages": [{"role": "user", "content": question}]})


def from_another_worker(url: str, key: str, question: str, than: str) -> httpx.Response:
    for _ in range(200):
        r = ask(url, key, question)
        if r.status_code == 200 and r.headers["x-ragpacer-worker"] != than:
            return r
        time.sleep(0.02)
    raise AssertionError(f"no other worker than {than} answered")


def written(url: str) -> None:
    client = redis.Redis.from_url(url)
    for _ in range(500):
        if client.keys("ragpacer:cache:*"):
            return
        time.sleep(0.02)
    raise AssertionError("the first answer was not written to Redis")


def test_two_workers_share_the_cache_and_the_rate_limit_and_survive_a_kill() -> None:
    if not redis_up(REDIS):
        pytest.skip("Redis is not running at 127.0.0.1:6379 (.ci/run starts it)")
    redis.Redis.from_url(REDIS).flushdb()
    env = {"RAGPACER_SERVER__WORKERS": "2", "RAGPACER_REDIS_URL": REDIS,
           "RAGPACER_LLM__ENGINE": "external", "RAGPACER_TRACING__EXPORTER": "none",
           "RAGPACER_SERVER__API_KEYS": '["key-cache", "key-limit"]',
           "RAGPACER_SERVER__RATE_LIMIT_PER_S": str(RATE),
           "RAGPACER_SERVER__RATE_LIMIT_BURST": str(BURST)}
    with served(env, timeout_s=240) as server:
        for _ in range(10):  # a degraded answer (a stage late on a loaded machine) is not cached
            first = ask(server.url, "key-cache", "How do I freeze my debit card in the app?")
            assert first.status_code == 200 and not first.json()["ragpacer"]["cached"]
            if not first.json()["ragpacer"]["degraded"]:
                break
        writer = first.headers["x-ragpacer-worker"]
        written(REDIS)  # the write happens off the request path
        other = from_another_worker(server.url, "key-cache",
                                    "How do I freeze my debit card in the app?", than=writer)
        assert other.json()["ragpacer"]["cached"], \
            f"the other worker reads the shared cache: {other.json()['ragpacer']['stages']}"

        t0 = time.monotonic()
        codes, workers = [], set()
        for _ in range(40):
            r = ask(server.url, "key-limit", "What does an overdraft cost?")
            codes.append(r.status_code)
            workers.add(r.headers["x-ragpacer-worker"])
        allowed = codes.count(200)
        assert len(workers) == 2 and set(codes) <= {200, 429}
        assert BURST <= allowed <= BURST + RATE * (time.monotonic() - t0) + 1, codes

        os.kill(int(writer), signal.SIGKILL)
        statuses, seen = [], set()
        for _ in range(240):  # paced under the key's rate limit
            r = ask(server.url, "key-cache", "How do I freeze my debit card in the app?")
            statuses.append(r.status_code)
            seen.add(r.headers["x-ragpacer-worker"])
            if len(seen - {writer, other.headers["x-ragpacer-worker"]}) == 1:
                break  # a replacement answers
            time.sleep(1 / RATE)
        assert writer not in seen, "a killed worker answered"
        assert len(seen) == 2, f"no replacement worker answered: {seen}"
        assert set(statuses) == {200}, "the other worker answered every request meanwhile"


def test_ragpacer_ask_beside_a_running_server_searches_the_same_index() -> None:
    """The server holds the Edge shard's lock; `ragpacer ask` searches a copy of that index,
    not the knowledge base in memory: the same sources as the server's."""
    env = {"RAGPACER_LLM__ENGINE": "external", "RAGPACER_TRACING__EXPORTER": "none",
           "RAGPACER_CACHE__ENABLED": "false"}
    question = "How do I freeze my debit card in the app?"
    with served(env, timeout_s=240) as server:
        served_sources = [s["id"] for s in httpx.post(
            f"{server.url}/v1/chat/completions", timeout=30,
            json={"model": "ragpacer", "messages": [{"role": "user", "content": question}]},
        ).json()["ragpacer"]["sources"]]
        out = subprocess.run([sys.executable, "-m", "ragpacer.pipeline.cli", "ask", "--json",
                              question], cwd=ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "in memory" not in out.stderr, out.stderr
    asked = json.loads(out.stdout)
    assert [s["id"] for s in asked["sources"]] == served_sources
    assert asked["stages"] and not asked["degraded"]


NEW_DOC = {"id": "savings-lunar", "title": "Lunar savings account",
           "text": "The Lunar savings account pays 7.25% interest a year on balances up to "
                   "5,000 EUR. Open it in the app under Accounts > New.",
           "metadata": {"department": "accounts", "doc_type": "guide", "product": "savings"}}
LUNAR = "What interest does the Lunar savings account pay?"


def test_workers_serve_a_new_index_without_a_restart(tmp_path: Path) -> None:
    """`ragpacer ingest` beside `serve --workers 2`: both workers answer from the new index
    within seconds (a document only the new index holds), and every request meanwhile is
    answered."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(ROOT / ".ragpacer" / "models")
    kb = tmp_path / "kb.jsonl"
    kb.write_text((ROOT / "pipeline" / "demo" / "knowledge_base.jsonl").read_text())
    env = {"RAGPACER_HOME": str(home), "RAGPACER_RETRIEVAL__KNOWLEDGE_BASE": str(kb),
           "RAGPACER_SERVER__WORKERS": "2", "RAGPACER_SERVER__INDEX_POLL_S": "0.5",
           "RAGPACER_LLM__ENGINE": "external", "RAGPACER_TRACING__EXPORTER": "none"}

    def ingest() -> None:
        out = subprocess.run([sys.executable, "-m", "ragpacer.pipeline.cli", "ingest", str(kb)],
                             cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr

    def lunar(url: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                          headers={"Connection": "close"},
                          json={"model": "ragpacer",
                                "messages": [{"role": "user", "content": LUNAR}]})

    ingest()
    with served(env, timeout_s=240) as server:
        # Both workers up on the first index (the server is ready with one).
        before: dict[str, str] = {}
        for _ in range(600):
            r = lunar(server.url)
            assert r.status_code == 200 and "7.25%" not in r.text, r.text
            before[r.headers["x-ragpacer-worker"]] = r.text
            if len(before) == 2:
                break
            time.sleep(0.1)
        assert len(before) == 2, f"workers up: {list(before)}"
        old_index = httpx.get(f"{server.url}/readyz", timeout=5).json()["index"]
        with kb.open("a") as f:
            f.write(json.dumps(NEW_DOC) + "\n")
        ingest()
        answered: dict[str, str] = {}  # worker -> its answer, once it serves the new index
        statuses = []
        for _ in range(600):
            r = lunar(server.url)
            statuses.append(r.status_code)
            if r.status_code == 200 and "7.25%" in r.json()["choices"][0]["message"]["content"]:
                answered[r.headers["x-ragpacer-worker"]] = r.text
            if len(answered) == 2:
                break
            time.sleep(0.05)
        assert set(answered) == set(before), f"serving the new index: {list(answered)}"
        assert set(statuses) == {200}, "every request answered while the workers switched"
        for _ in range(20):  # each worker's readiness names the new index
            ready = httpx.get(f"{server.url}/readyz", timeout=5,
                              headers={"Connection": "close"}).json()
            assert ready["status"] == "ok" and ready["index"] != old_index, ready

"""One `ragpacer serve` with two worker processes and two managed vLLM replicas, Redis shared:
the deployment of issue-sized scale-out on one machine, in one run.

Under load from four callers: a cached answer written through one worker is served by the
other; `kill -9` of one engine replica costs no answer and no answer ends later than its
deadline + 50 ms (measured by the server from the request's arrival: Server-Timing's queue and
total), and the replica is restarted and takes calls again with no process of its old group
left; `kill -9` of one worker leaves the other answering while a replacement starts, and the
requests that failed meanwhile (connections the dead worker held) are counted and reported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from evals.server_process import llm_answers, served
from ragpacer.pipeline.llm.engine import _group_alive
from ragpacer.pipeline.llm.prepare import manifest_ok
from ragpacer.pipeline.llm.replicas import MAX_EJECT_S
from tests.conftest import ROOT
from tests.support.redis import redis_up

pytestmark = [pytest.mark.llm, pytest.mark.processes]

REDIS = "redis://127.0.0.1:6379/8"
PORT = 8195  # the replicas: 8195 and 8196
URLS = [f"http://127.0.0.1:{PORT + i}/v1" for i in range(2)]
DEADLINE_MS = 3000.0
LATE_MS = 50.0
QUESTIONS = ["what does an overdraft cost", "how do I order a new card",
             "what does an international transfer cost", "can I open a joint account"]


@dataclass
class Load:
    """Callers sending distinct LLM questions (no cache hit) until stopped."""

    url: str
    answers: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def caller(self, who: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            question = f"{QUESTIONS[(who + i) % len(QUESTIONS)]} (caller {who} turn {i})"
            sent = time.monotonic()
            try:
                # A new connection per request: the kernel spreads them over the workers.
                r = httpx.post(f"{self.url}/v1/chat/completions", timeout=30,
                               headers={"Connection": "close"},
                               json={"model": "ragpacer", "deadline_ms": DEADLINE_MS,
                                     "messages": [{"role": "user", "content": question}]})
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status_code != 200:
                self.failures.append(f"{r.status_code}: {r.text[:200]}")
                continue
            timing = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers["server-timing"]))
            self.answers.append({"worker": r.headers["x-ragpacer-worker"],
                                 "server_ms": float(timing["queue"]) + float(timing["total"]),
                                 "client_ms": (time.monotonic() - sent) * 1000.0,
                                 "replica": (r.json()["ragpacer"]["llm_call"] or {}).get(
                                     "replica"),
                                 "at": time.monotonic(), "sent": sent})

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.caller, args=(i,)) for i in range(4)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def pid_listening(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))  # type: ignore[union-attr]


def replica_calls(url: str, replica: str, workers: int = 2) -> float:
    """The replica's calls summed over the workers (each keeps its own counters)."""
    seen: dict[str, float] = {}
    for _ in range(100):
        r = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10)
        line = re.search(rf'ragpacer_llm_replica_calls_total\{{model="smollm2",replica="'
                         rf'{re.escape(replica)}"\}} ([\d.e+]+)', r.text)
        seen[r.headers["x-ragpacer-worker"]] = float(line.group(1)) if line else 0.0
        if len(seen) == workers:
            return sum(seen.values())
    raise AssertionError(f"metrics from {len(seen)} workers only")


def test_two_workers_two_replicas_survive_kills_under_load() -> None:
    if not redis_up(REDIS):
        pytest.skip("Redis is not running at 127.0.0.1:6379 (.ci/run starts it)")
    if not manifest_ok(ROOT / ".ragpacer" / "models" / "smollm2-135m-instruct"):
        pytest.skip("the LLM is not prepared: run `ragpacer llm prepare` (make test does)")
    redis.Redis.from_url(REDIS).flushdb()
    env = {**llm_answers(), "RAGPACER_SERVER__WORKERS": "2", "RAGPACER_REDIS_URL": REDIS,
           "RAGPACER_TRACING__EXPORTER": "none", "RAGPACER_CACHE__SEMANTIC": "false",
           "RAGPACER_LLM__MANAGED__PORT": str(PORT), "RAGPACER_LLM__MANAGED__REPLICAS": "2",
           "RAGPACER_LLM__MODELS": json.dumps([{"name": "smollm2", "url": URLS[0],
                                                "urls": URLS, "max_tokens": 48}])}
    with served(env, timeout_s=600) as server:
        url = server.url
        # A cached answer written through one worker is served by the other (a greeting: its
        # route answers from a template, whole whatever the engines' load).
        question = "Hello there, good morning"
        first = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           headers={"Connection": "close"},
                           json={"model": "ragpacer",
                                 "messages": [{"role": "user", "content": question}]})
        assert first.status_code == 200, first.text
        assert not first.json()["ragpacer"]["degraded"], first.text
        writer = first.headers["x-ragpacer-worker"]
        time.sleep(0.3)  # the write happens off the request path
        for _ in range(200):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           headers={"Connection": "close"},
                           json={"model": "ragpacer",
                                 "messages": [{"role": "user", "content": question}]})
            if r.headers["x-ragpacer-worker"] != writer:
                assert r.json()["ragpacer"]["cached"], "the other worker reads the shared cache"
                break
        else:
            raise AssertionError("no other worker answered")

        # kill -9 of one engine replica under load.
        victim = pid_listening(PORT)
        victim_group = os.getpgid(victim)
        with Load(url) as load:
            time.sleep(3)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            time.sleep(8)
        assert not load.failures, load.failures
        during = [a for a in load.answers if a["at"] > killed_at]
        assert during, "no answer after the kill"
        late = [a for a in load.answers if a["server_ms"] > DEADLINE_MS + LATE_MS]
        assert not late, f"{len(late)} answers later than the deadline + {LATE_MS} ms: {late[:3]}"
        print(f"\nreplica kill: {len(load.answers)} answers, 0 failed, slowest "
              f"{max(a['server_ms'] for a in load.answers):.0f} ms from arrival, "
              f"{max(a['client_ms'] for a in load.answers):.0f} ms at the client")
        for _ in range(240):  # the replica restarted: readiness back to ok
            if httpx.get(f"{url}/readyz", timeout=5).json()["checks"]["llm"] == "ok":
                break
            time.sleep(1)
        else:
            raise AssertionError(httpx.get(f"{url}/readyz", timeout=5).text)
        assert not _group_alive(victim_group), "the killed replica left a process behind"
        # Each worker readmits the replica once its model list answers again (or after what
        # is left of its breaker's backoff, up to MAX_EJECT_S, if it did not see it down); its
        # calls go to the LLM again once the TTFT it learned under the load allows.
        before = replica_calls(url, URLS[0])
        give_up = time.monotonic() + MAX_EJECT_S + 30
        i = 0
        while replica_calls(url, URLS[0]) <= before:
            assert time.monotonic() < give_up, "the restarted replica takes calls again"
            httpx.post(f"{url}/v1/chat/completions", timeout=30,
                       json={"model": "ragpacer", "deadline_ms": 10_000, "messages": [
                           {"role": "user", "content": f"{QUESTIONS[i % 4]} (after {i})"}]})
            i += 1
        print(f"the restarted replica took a call after {i} requests")

        # kill -9 of one worker under load.
        with Load(url) as load:
            time.sleep(2)
            dead = load.answers[-1]["worker"]
            os.kill(int(dead), signal.SIGKILL)
            killed_at = time.monotonic()
            for _ in range(120):
                time.sleep(0.5)
                after = {a["worker"] for a in load.answers if a["sent"] > killed_at}
                if len(after - {dead}) == 2:
                    break  # the other worker and a replacement answer
        # Asked after the kill: an answer the dead worker sent just before it can still be
        # read after it, by a caller thread waiting for the GIL.
        after = {a["worker"] for a in load.answers if a["sent"] > killed_at}
        assert dead not in after, "a killed worker answered"
        assert len(after) == 2, f"no replacement worker answered: {after}"
        print(f"worker kill: {len(load.answers)} answered, {len(load.failures)} failed: "
              f"{load.failures[:3]}")
        assert len(load.failures) <= 4, "at most the requests the dead worker held"

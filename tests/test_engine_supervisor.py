"""The managed engine's supervisor, on a stand-in engine process: a tiny HTTP server with a
/health route and a child that ignores SIGTERM, as vLLM's resource tracker does. The same
path runs against vLLM in test_llm_engine."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from ragpacer.pipeline.core.settings import ManagedEngineSettings
from ragpacer.pipeline.llm.engine import ManagedEngine, _group_alive
from ragpacer.pipeline.llm.manager import EngineFleet
from ragpacer.pipeline.llm.prepare import Prepared
from ragpacer.pipeline.llm.supervisor import EngineSupervisor
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.scripted_llm import Script, ScriptedLLM
from tests.support.http import free_port, serving
from tests.support.resources import RESOURCES

STAND_IN = """
import http.server, signal, subprocess, sys
subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def stand_in(tmp_path: Path, command: list[str]) -> ManagedEngine:
    port = int(command[-1]) if command[-1].isdigit() else free_port()
    cfg = ManagedEngineSettings(port=port, nice=0)
    engine = ManagedEngine(cfg, Prepared(python=Path(sys.executable), gguf=None,
                                         model_dir=None), tmp_path, "smollm2")
    engine.command = lambda: command  # type: ignore[method-assign]
    return engine


async def test_a_killed_engine_is_restarted_and_its_old_group_cleared(tmp_path: Path) -> None:
    script = tmp_path / "engine.py"
    script.write_text(STAND_IN)
    engine = stand_in(tmp_path, [sys.executable, str(script), str(free_port())])
    engine.start()
    await asyncio.to_thread(engine.wait_healthy, 10)
    downs: list[float] = []
    sup = EngineSupervisor(engine, poll_s=0.05, backoff_s=0.05, on_restart=downs.append)
    watching = asyncio.create_task(sup.run())
    old = engine.proc
    assert old is not None
    await asyncio.sleep(0.3)  # the stand-in has started its SIGTERM-deaf child
    os.kill(old.pid, signal.SIGKILL)
    for _ in range(200):  # noticed within a poll interval, restarted after the backoff
        await asyncio.sleep(0.05)
        if sup.restarts:
            break
    assert sup.restarts == 1 and sup.state == "up" and sup.status() == "ok"
    assert len(downs) == 1 and downs[0] > 0
    assert engine.proc is not None and engine.proc.pid != old.pid
    assert not _group_alive(old.pid), "the old engine's SIGTERM-deaf child outlived it"
    assert engine._healthy()
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    engine.stop()


async def test_an_engine_that_cannot_start_is_given_up_with_the_reason(tmp_path: Path) -> None:
    engine = stand_in(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])
    engine.start()
    sup = EngineSupervisor(engine, poll_s=0.05, backoff_s=0.01, max_attempts=3)
    await asyncio.wait_for(sup.run(), timeout=30)  # returns once it gives up
    assert sup.state == "failed" and sup.restarts == 0
    assert sup.status().startswith("failed: gave up after 3 starts")
    assert "exited with code 3" in sup.status()
    # Readiness says so, instead of a bare "down".
    with ScriptedLLM(Script()) as llm:
        p = Pipeline(make_settings(llm.url), resources=RESOURCES)
        p.engines = EngineFleet([engine])
        p.engines.supervisors.append(sup)
        with serving(p) as base:
            ready = await asyncio.to_thread(httpx.get, f"{base}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["llm"] == f"{engine.base_url} {sup.status()}"

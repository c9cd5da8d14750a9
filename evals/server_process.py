"""`ragpacer serve` as a separate process for the load, overload and soak runs: started with
config overrides, waited for, sampled (RSS, open file descriptors, threads) and stopped, with
a check that nothing it started outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def llm_answers(answer: str = "llm_grounded") -> dict[str, str]:
    """RAGPACER_* variables making every route with a model answer through the LLM: load
    runs measure the engine under load, which the shipped extractive answers never call."""
    from ragpacer.pipeline.core.settings import load_settings

    routes = load_settings(ROOT / "ragpacer.yaml", environ={}).routing.routes
    return {f"RAGPACER_ROUTING__ROUTES__{name.upper()}__ANSWER": answer
            for name, route in routes.items() if route.model is not None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    t0: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        value = {ln.split(":")[0]: ln.split()[1] for ln in status if ":" in ln and ln.split()[1:]}
        s = Sample(round(time.monotonic() - self.t0, 1), int(value["VmRSS"]) / 1024,
                   len(os.listdir(f"/proc/{pid}/fd")), int(value["Threads"]))
        self.samples.append(s)
        return s


def group_members(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,pid=,stat=,cmd="], capture_output=True,
                         text=True).stdout
    return [ln for ln in out.splitlines()
            if ln.split()[0] == str(pgid) and not ln.split()[2].startswith("Z")]


@contextlib.contextmanager
def served(env: dict[str, str] | None = None, timeout_s: float = 300) -> Iterator[ServerProcess]:
    """Run `ragpacer serve` in its own process group with RAGPACER_* overrides; on exit stop
    it (SIGTERM) and assert its group is empty: no orphan workers or engines."""
    port = free_port()
    full = {**os.environ, **(env or {}), "RAGPACER_SERVER__PORT": str(port)}
    # The server's output goes to a file: a pipe nobody drains fills up under load (every
    # failed stage logs a line) and then blocks the server's event loop on its next write.
    log_path = Path(tempfile.mkdtemp(prefix="ragpacer-serve-")) / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ragpacer.pipeline.cli", "serve"], cwd=ROOT,
                            env=full, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    server = ServerProcess(proc, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                checks = httpx.get(f"{server.url}/readyz", timeout=2).json()["checks"]
                if checks["llm"] in ("ok", "unused"):
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"server not ready after {timeout_s} s")
        server.t0 = time.monotonic()
        yield server
    finally:
        stop(proc)


def _child_groups(pid: int) -> set[int]:
    """Process groups of a process's children (the managed engine runs in its own)."""
    out = subprocess.run(["ps", "-eo", "ppid=,pgid="], capture_output=True, text=True).stdout
    return {int(g) for p, g in (ln.split() for ln in out.splitlines()) if int(p) == pid}


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30) -> None:
    groups = {proc.pid, *_child_groups(proc.pid)}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for _ in range(100):
        left = [m for g in groups for m in group_members(g)]
        if not left:
            return
        time.sleep(0.1)
    for g in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(g, signal.SIGKILL)
    raise AssertionError(f"processes outlived the server: {left}")


async def sampled(server: ServerProcess, coro: Any, every_s: float = 1.0) -> dict[str, Any]:
    async def sampler() -> None:
        while True:
            server.sample()
            await asyncio.sleep(every_s)

    task = asyncio.create_task(sampler())
    try:
        result = await coro
    finally:
        task.cancel()
    rss = [s.rss_mb for s in server.samples]
    fds = [s.fds for s in server.samples]
    result["server_rss_mb"] = {"start": rss[0], "end": rss[-1], "max": max(rss)}
    result["server_fds"] = {"start": fds[0], "end": fds[-1], "max": max(fds)}
    result["samples"] = [vars(s) for s in server.samples]
    server.samples.clear()
    return result

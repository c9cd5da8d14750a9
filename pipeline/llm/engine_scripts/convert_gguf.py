"""Convert a GGUF checkpoint to a safetensors folder vLLM's CPU backend can serve.

Run by ``ragpacer llm prepare`` with the engine's own Python (it has torch + transformers);
this file imports nothing from ragpacer. Usage: convert_gguf.py GGUF_FILE OUT_DIR DTYPE
"""

import json
import shutil
import sys
from pathlib import Path


def main() -> None:
    gguf, out, dtype_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    print(f"loading {gguf.name} ...", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # The weights are dequantized now: drop the GGUF quantizer so vLLM reads plain tensors.
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"saving to {out} ...", flush=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-written model never looks prepared
    print("done", flush=True)


if __name__ == "__main__":
    main()

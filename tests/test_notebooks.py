"""The eval notebooks execute (on small settings) and fail loudly if a cell fails."""

from __future__ import annotations

from collections.abc import Iterator

import nbformat
import pytest
from nbclient import NotebookClient

from ragpacer.pipeline.core.settings import ManagedEngineSettings
from ragpacer.pipeline.llm.engine import ManagedEngine
from ragpacer.pipeline.llm.prepare import manifest_ok, prepare
from tests.conftest import ROOT

DATA = ROOT.parent / "shared" / "data"
HOME = ROOT / ".ragpacer"
PORT = 8179


def execute(name: str) -> None:
    nb = nbformat.read(ROOT / "evals" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "notebooks are committed with outputs stripped"
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "evals")}}).execute()


@pytest.mark.data
@pytest.mark.parametrize("name", ["retrieval_quality.ipynb", "intent_accuracy.ipynb"])
def test_data_notebook_runs(name: str) -> None:
    if not DATA.exists():
        pytest.skip(f"reference data not found at {DATA}")
    execute(name)


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """One real vLLM engine for the notebooks that answer questions."""
    if not manifest_ok(HOME / "models" / "smollm2-135m-instruct"):
        pytest.skip("the LLM is not prepared: run `ragpacer llm prepare` (make test does)")
    engine = ManagedEngine(ManagedEngineSettings(port=PORT), prepare(HOME, "vllm", lambda m: None),
                           HOME, "smollm2")
    engine.start()
    try:
        engine.wait_healthy(None)
        yield f"http://127.0.0.1:{PORT}/v1"
    finally:
        engine.stop()


@pytest.mark.llm
@pytest.mark.parametrize("name", ["latency_breakdown.ipynb", "budget_sweep.ipynb",
                                  "answer_quality.ipynb",
                                  "load_test.ipynb"])
def test_serving_notebook_runs(name: str, engine_url: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVAL_LLM_URL", engine_url)  # the kernel inherits it
    execute(name)


def test_the_budget_sweep_lifts_every_generation_budget() -> None:
    """The sweep lets the deadline be the only limit; a route's own generation budget
    (lending: 2,300 ms) once cut its 'unconstrained' reference answers at 2.3 s."""
    from evals.budget_sweep import eval_settings

    settings = eval_settings(generation_budget_ms=30_000)
    assert any("generation" in r.budgets for r in settings.routing.routes.values())
    for route in settings.routing.routes.values():
        assert settings.stage("generation", route).budget_ms == 30_000

import json
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
# No LLM for these: the engine is external and nothing listens, so answers are extractive.
ENV = {
    "RAGPACER_LLM__ENGINE": "external",
    "RAGPACER_LLM__MODELS": '[{"name": "smollm2", "url": "http://127.0.0.1:9/v1"}]',
}


def test_ask_prints_answer_sources_and_timings() -> None:
    res = runner.invoke(app, ["ask", "I lost my card", "-c", str(ROOT / "ragpacer.yaml")], env=ENV)
    assert res.exit_code == 0, res.output
    assert "Report a lost or stolen card" in res.output
    assert "output_guardrails" in res.output and "elapsed ms" in res.output


def test_ask_json() -> None:
    res = runner.invoke(app, ["ask", "hello", "--json", "-c", str(ROOT / "ragpacer.yaml")], env=ENV)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["route"] == "smalltalk" and data["answer_kind"] == "template"


def test_ask_bad_input_is_a_clear_error_not_a_traceback() -> None:
    res = runner.invoke(app, ["ask", "  ", "-c", str(ROOT / "ragpacer.yaml")], env=ENV)
    assert res.exit_code == 2 and "empty" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["ask", "hi", "--filters", "{bad"], env=ENV)
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_config_check(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["config", "check", str(ROOT / "ragpacer.yaml")], env=ENV)
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  generation: {budget_ms: 0}\n")
    res = runner.invoke(app, ["config", "check", str(bad)])
    assert res.exit_code == 2 and "stages.generation.budget_ms" in res.output

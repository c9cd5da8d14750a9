from pathlib import Path

import pytest

from ragpacer.pipeline.core.errors import ConfigError
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.sdk import Pipeline
from tests.support.resources import RESOURCES

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_valid_and_builds() -> None:
    settings = load_settings(ROOT / "ragpacer.yaml", environ={})
    assert settings.routing.intents["greeting"] == "smalltalk"
    Pipeline(settings, resources=RESOURCES)


def test_environment_overrides_nested_keys() -> None:
    env = {"RAGPACER_DEADLINE_MS": "800", "RAGPACER_STAGES__RETRIEVAL__BUDGET_MS": "42",
           "RAGPACER_REDIS_URL": "redis://127.0.0.1:6379/0"}
    s = load_settings(ROOT / "ragpacer.yaml", environ=env)
    assert s.deadline_ms == 800
    assert s.stages["retrieval"].budget_ms == 42
    assert s.stages["retrieval"].fallback == "cheaper"  # the file's other fields survive
    assert s.redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("deadline_ms: -5\n", "deadline_ms"),
        ("stages:\n  generation: {fallback: explode}\n", "stages.generation.fallback"),
        ("llm:\n  default_model: nope\n", "llm"),
        ("routing:\n  intents: {greeting: nowhere}\n", "routing"),
        ("guardrails:\n  pii_action: shout\n", "guardrails.pii_action"),
        ("surprise: 1\n", "surprise"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.field is not None and info.value.field.startswith(field)


def test_unparseable_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml", environ={})
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listed, environ={})
    for text, key in (("1: 2\n", "1"), ("null: x\n", "None"), ("true: 1\n", "True")):
        listed.write_text(text)  # a key YAML reads as a number, null or boolean
        with pytest.raises(ConfigError, match=f"setting names are words, not {key}"):
            load_settings(listed, environ={})


def test_bad_values_fail_at_startup_not_at_first_request(tmp_path: Path) -> None:
    # A fallback the stage cannot provide, an unknown filter field on a route, a route
    # that needs a stage nobody installed: all are caught when the pipeline is built.
    cases = {
        "stages:\n  intent: {fallback: cheaper}\n": "stages.intent.fallback",
        "routing:\n  routes:\n    rag: {filters: {colour: red}}\n": "routing.routes.rag.filters",
        "routing:\n  routes:\n    rag: {stages: [features]}\n": "routing.routes.rag.stages",
    }
    for text, field in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            Pipeline(load_settings(path, environ={}), resources=RESOURCES)
        assert info.value.field == field


def test_a_stray_variable_is_ignored_with_a_warning(caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level("WARNING", logger="ragpacer.settings"):
        s = load_settings(ROOT / "ragpacer.yaml",
                          environ={"RAGPACER_FUZZ_EXAMPLES": "3", "RAGPACER_LLM__NOPE": "1",
                                   "RAGPACER_DEADLINE_MS": "800"})
    assert s.deadline_ms == 800
    assert "RAGPACER_FUZZ_EXAMPLES" in caplog.text and "RAGPACER_LLM__NOPE" in caplog.text


def test_values_are_parsed_by_the_settings_type() -> None:
    s = load_settings(ROOT / "ragpacer.yaml", environ={
        "RAGPACER_SERVER__MODEL_NAME": "no", "RAGPACER_LANGFUSE__SECRET_KEY": "0123",
        "RAGPACER_CACHE__ENABLED": "false", "RAGPACER_ROUTING__ROUTES__RAG__ANSWER": "llm",
        "RAGPACER_STAGES__RETRIEVAL__BUDGET_MS": "50",
        "RAGPACER_ROUTING__OPEN_INTENTS": '["out_of_scope"]', "RAGPACER_REDIS_URL": ""})
    assert s.server.model_name == "no"  # a string, not YAML's False
    assert s.langfuse.secret_key is not None and s.langfuse.secret_key.get_secret_value() == "0123"
    assert s.cache.enabled is False and s.routing.routes["rag"].answer == "llm"
    assert s.routing.routes["rag"].description, "one key of a route: the file keeps the rest"
    assert s.stages["retrieval"].budget_ms == 50 and s.stages["retrieval"].fallback == "cheaper"
    assert s.routing.open_intents == ["out_of_scope"] and s.redis_url is None
    with pytest.raises(ConfigError, match="JSON"):
        load_settings(environ={"RAGPACER_SERVER__API_KEYS": "[a, b]"})


def test_config_check_passes_beside_a_stray_variable() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAGPACER_FUZZ_EXAMPLES": "3"}
    out = subprocess.run([sys.executable, "-m", "ragpacer.pipeline.cli", "config", "check",
                          str(ROOT / "ragpacer.yaml")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_secrets_come_from_files_and_the_environment_wins(tmp_path: Path) -> None:
    """Mounted secrets: one file per RAGPACER_* name, a trailing newline dropped; a variable
    of the same name set in the environment takes precedence; an unreadable folder fails
    naming the variable."""
    (tmp_path / "RAGPACER_LANGFUSE__SECRET_KEY").write_text("sk-from-file\n")
    (tmp_path / "ragpacer_server__api_keys").write_text('["key-a", "key-b"]\n')
    (tmp_path / "README").write_text("not a secret")
    s = load_settings(environ={"RAGPACER_SECRETS_DIR": str(tmp_path)})
    assert s.langfuse.secret_key is not None
    assert s.langfuse.secret_key.get_secret_value() == "sk-from-file"
    assert [k.get_secret_value() if hasattr(k, "get_secret_value") else k
            for k in s.server.api_keys] == ["key-a", "key-b"]
    env = {"RAGPACER_SECRETS_DIR": str(tmp_path), "RAGPACER_LANGFUSE__SECRET_KEY": "sk-env"}
    assert load_settings(environ=env).langfuse.secret_key.get_secret_value() == "sk-env"
    with pytest.raises(ConfigError, match="RAGPACER_SECRETS_DIR"):
        load_settings(environ={"RAGPACER_SECRETS_DIR": str(tmp_path / "missing")})

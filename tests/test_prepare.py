"""Long setup steps say how long they have been running, and how long they took."""

from __future__ import annotations

import pytest

from ragpacer.pipeline.llm import prepare


def test_a_long_step_reports_its_elapsed_time_while_it_runs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(prepare, "REPORT_EVERY_S", 0.1)
    said: list[str] = []
    done = prepare.run_step(["sleep", "0.45"], "conversion", said.append)
    assert done.returncode == 0
    assert len([s for s in said if s.endswith(" s") and "done" not in s]) >= 3
    assert said[-1].startswith("    conversion: done in ")


def test_a_failed_step_keeps_its_error_output_for_the_message() -> None:
    said: list[str] = []
    done = prepare.run_step(["sh", "-c", "echo broken wheel >&2; exit 3"], "pip", said.append)
    assert done.returncode == 3 and "broken wheel" in done.stderr
    assert not any("done" in s for s in said)
    with pytest.raises(prepare.PrepareError):
        prepare.install_steps(prepare.Path("/bin/false"), (("install", "x"),),
                              prepare.Path("/nonexistent/stamp"), said.append)

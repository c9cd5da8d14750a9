"""The soak run, CI-sized: 3 minutes of mixed traffic against `ragpacer serve` with its own
real vLLM engine. Memory and descriptors stay within the bounds evals/soak.py states, no
request is stuck, and shutdown leaves no process of the server or the engine behind."""

from __future__ import annotations

import json

import pytest

from evals.soak import soak, verdict
from ragpacer.pipeline.llm.prepare import manifest_ok
from tests.conftest import ROOT

pytestmark = pytest.mark.llm
PORT = 8178
MINUTES = 3.0


async def test_three_minute_soak_is_flat_and_leaves_nothing_behind() -> None:
    if not manifest_ok(ROOT / ".ragpacer" / "models" / "smollm2-135m-instruct"):
        pytest.skip("the LLM is not prepared: run `ragpacer llm prepare` (make test does)")
    env = {"RAGPACER_LLM__MANAGED__PORT": str(PORT),
           "RAGPACER_LLM__MODELS": json.dumps([{"name": "smollm2",
                                                "url": f"http://127.0.0.1:{PORT}/v1"}]),
           "RAGPACER_TRACING__EXPORTER": "none"}
    result = await soak(env, MINUTES, rate=4.0, sample_every_s=2.0)  # served() checks orphans
    v = verdict(result)
    assert result["answered"] > 0.95 * result["requests"], result["errors"]
    assert v["stuck_or_failed"] == 0, result["errors"]
    assert v["rss_growth_mb"] <= v["rss_bound_mb"], v
    assert v["fd_growth"] <= v["fd_bound"], v

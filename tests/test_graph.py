"""The graph: routing by intent, parallel branches, cache before the graph."""

from ragpacer.pipeline.core.stage import Outcome
from ragpacer.pipeline.sdk import Pipeline
from tests.conftest import make_settings
from tests.stages import Probe
from tests.support.resources import RESOURCES


def branchy_pipeline(url: str, delay_s: float = 0.05):
    features = Probe("features", delay_s=delay_s, output={"features": {"tier": "gold"}})
    tools = Probe("tools", delay_s=delay_s,
                  output={"tool_results": [{"name": "balance", "result": {"eur": 12}}]})
    settings = make_settings(url, stages={"features": {"budget_ms": 2000},
                                          "tools": {"budget_ms": 2000}},
                             routing={"routes": {
        "rag": {"stages": ["features", "retrieval", "tools"], "model": "default"},
        "smalltalk": {"stages": [], "model": None, "template": "Hi!"},
    }, "intents": {"greeting": "smalltalk"}})
    return Pipeline(settings, stages={"features": features, "tools": tools},
        resources=RESOURCES), features, tools


async def test_independent_branches_run_concurrently(scripted) -> None:
    p, features, tools = branchy_pipeline(scripted.url)
    result = await p.arun("can I open a joint account", user_id="c1")
    (f0, f1), (t0, t1) = features.spans[0], tools.spans[0]
    assert f0 < t1 and t0 < f1, "features and tools should overlap in time"
    names = [r.name for r in result.stages]
    assert names[:3] == ["cache", "input_guardrails", "intent"]
    assert {"features", "retrieval", "tools"} <= set(names)
    assert names[-3:] == ["generation", "grounding", "output_guardrails"]
    # What the branches produced reached the model's prompt.
    prompt = scripted.requests[-1]["messages"][-1]["content"]
    assert "tier=gold" in prompt and '<tool name="balance">' in prompt and "<source" in prompt
    await p.aclose()


async def test_route_without_branches_skips_them_and_the_llm(scripted) -> None:
    p, features, tools = branchy_pipeline(scripted.url)
    result = await p.arun("hello")
    assert result.route == "smalltalk" and result.answer == "Hi!"
    assert result.answer_kind == "template" and result.model is None
    assert features.calls == tools.calls == 0
    assert scripted.requests == []
    assert [r.name for r in result.stages] == [
        "cache", "input_guardrails", "intent", "generation", "grounding", "output_guardrails"]
    await p.aclose()


async def test_low_confidence_goes_to_the_default_route(scripted) -> None:
    p, _, _ = branchy_pipeline(scripted.url)
    result = await p.arun("I have a question")
    assert result.low_confidence and result.route == "rag"
    await p.aclose()


async def test_a_route_taken_only_when_the_head_is_surer(scripted) -> None:
    """A route that declines outright asks for more confidence: a question it would take by
    mistake goes to the default route instead of being lost."""
    def pipeline(bar: float | None) -> Pipeline:
        return Pipeline(make_settings(scripted.url, routing={"routes": {
            "rag": {"stages": [], "model": None, "template": "answered"},
            "smalltalk": {"stages": [], "model": None, "template": "Hi!",
                          "min_confidence": bar},
        }, "intents": {"greeting": "smalltalk"}}), resources=RESOURCES)

    plain, strict = pipeline(None), pipeline(1.0)
    taken = await plain.arun("hello")
    assert taken.route == "smalltalk" and 0.5 <= taken.intent_confidence < 1.0
    missed = await strict.arun("hello")
    assert missed.route == "rag" and missed.low_confidence and missed.answer == "answered"
    assert missed.intent == "greeting"
    await plain.aclose()
    await strict.aclose()


async def test_cache_hit_does_not_run_the_graph(make_pipeline, scripted) -> None:
    p = make_pipeline(scripted.url)
    first = await p.arun("how do I turn on two factor authentication")
    assert not first.cached and not first.degraded
    await p.caching.drain()
    second = await p.arun("How do I turn on two-factor  authentication?".replace("-", " "))
    assert second.cached and second.answer == first.answer
    assert [r.name for r in second.stages] == ["cache"]
    assert len(scripted.requests) == 1, "a hit must not reach the LLM"
    # A different filter scope is a different cache entry.
    third = await p.arun("how do I turn on two factor authentication",
                         filters={"product": "security"})
    assert not third.cached
    await p.aclose()


async def test_the_cache_answers_hits_while_its_recent_lookups_ran_over_budget(
        make_pipeline, scripted) -> None:  # type: ignore[no-untyped-def]
    """Under load a lookup's wall time is the event loop's queue. Were the cache skipped for
    its p95, every request would go down the whole graph: more load, and the cache never
    back. Other stages are skipped; the cache is only cut at its budget."""
    p = make_pipeline(scripted.url)
    first = await p.arun("how do I turn on two factor authentication")
    await p.caching.drain()
    for _ in range(50):
        p.runner.window("cache").add(80.0)  # 4x its 20 ms budget
        p.runner.window("intent").add(400.0)
    again = await p.arun("how do I turn on two factor authentication")
    assert again.cached and again.answer == first.answer
    miss = await p.arun("what does an overdraft cost")
    assert {r.name: r.outcome for r in miss.stages}["intent"] is Outcome.SKIPPED
    await p.aclose()


async def test_degraded_answers_are_not_cached(make_pipeline) -> None:
    p = make_pipeline("http://127.0.0.1:9/v1")  # nothing listens: generation falls back
    first = await p.arun("what does an overdraft cost")
    assert "generation" in first.degraded and first.answer_kind == "extractive"
    await p.caching.drain()
    assert not (await p.arun("what does an overdraft cost")).cached
    await p.aclose()


async def test_cache_entries_never_cross_tenants_or_configs(scripted) -> None:
    p = Pipeline(make_settings(scripted.url), resources=RESOURCES)
    await p.arun("how do I turn on two factor authentication", tenant="bank-a")
    await p.caching.drain()
    assert (await p.arun("how do I turn on two factor authentication", tenant="bank-a")).cached
    other = await p.arun("how do I turn on two factor authentication", tenant="bank-b")
    assert not other.cached and other.cache_hit is None
    # A config change gives a new cache version: earlier entries become unreachable.
    changed = Pipeline(make_settings(scripted.url, deadline_ms=2400),
                       cache=p.caching.backend, resources=RESOURCES)
    assert changed.version != p.version
    assert not (await changed.arun("how do I turn on two factor authentication",
                                   tenant="bank-a")).cached
    await p.aclose()
    await changed.aclose()

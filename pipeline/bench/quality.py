"""The answer-quality eval: is what reaches the customer right, supported, and complete?

A case is a question (or a conversation) over the knowledge base, with the articles that answer
it (``gold``) and the facts a right answer states (each a list of accepted wordings), or
``expect: decline`` for questions the assistant must not answer (out of scope, injection,
in-domain but not in the help centre). Metrics, overall and per route and per kind:

- ``gold_at_3``: a gold article among the first three sources;
- ``fact_accuracy``: answerable cases whose answer states every fact (a decline states none);
- ``unsupported_rate``: answers with a number, amount, percentage, time, phone number, email or
  URL that is in no source and not in the question (the grounding guard's own check);
- ``decline_rate_out_of_scope`` (out of scope and injection), ``decline_rate_unanswerable``,
  ``false_decline_rate`` (answerable cases declined), ``wrong_answer_rate`` (answerable cases
  answered without every fact: with the two others, fact accuracy's complement);
- ``mid_sentence_rate``: answers that stop inside a sentence;
- latency p50 / p95 / p99 in ms.

Run it with ``ragpacer eval answers`` (SDK, or ``--url`` for a running server).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragpacer.pipeline.grounding import ends_mid_sentence, tool_evidence, unsupported

DECLINE_KINDS = ("out_of_scope", "injection")


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    kind: str
    messages: tuple[dict[str, str], ...]
    gold: tuple[str, ...] = ()
    facts: tuple[tuple[str, ...], ...] = ()
    expect: str = "answer"  # answer | decline
    # Questions of the message the help centre does not answer: the answer must say so of
    # each (and answer the rest).
    unanswered: int = 0
    user: str | None = None  # the customer asking (personal questions)
    # That customer's recent transactions, written to the transaction store before the run.
    transactions: tuple[dict[str, Any], ...] = ()

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]

    @property
    def history(self) -> tuple[dict[str, str], ...]:
        return self.messages[:-1]


def load_cases(path: Path) -> list[Case]:
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            messages = obj.get("messages") or [{"role": "user", "content": obj["question"]}]
            cases.append(Case(
                id=obj["id"], kind=obj["kind"], messages=tuple(messages),
                gold=tuple(obj.get("gold", ())),
                facts=tuple(tuple(f) for f in obj.get("facts", ())),
                expect=obj.get("expect", "answer"), unanswered=int(obj.get("unanswered", 0)),
                user=obj.get("user"),
                transactions=tuple(obj.get("transactions", ()))))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not an answer-quality case ({exc})") from exc
    return cases


@dataclass(slots=True)
class Answer:
    """What a target returned for one case."""

    text: str
    kind: str  # llm | extractive | template | decline
    route: str | None
    sources: list[tuple[str, str]]  # (document id, text), best first
    elapsed_ms: float
    degraded: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


_NUMBER_SEP = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalise(text: str) -> str:
    text = text.lower().replace("€", " eur ").replace("–", "-").replace("’", "'")
    text = re.sub(r"\beuros?\b", "eur", text)
    text = _NUMBER_SEP.sub("", text)
    return re.sub(r"\s+", " ", text)


def states(answer: str, wordings: Sequence[str]) -> bool:
    """The answer states one of the accepted wordings (a number not as part of another)."""
    norm = normalise(answer)
    for w in wordings:
        w = normalise(w)
        pattern = re.escape(w)
        if w[:1].isdigit():
            pattern = r"(?<![\d.])" + pattern
        if w[-1:].isdigit():
            pattern += r"(?![\d])"
        if re.search(pattern, norm):
            return True
    return False


def doc_id(source_id: str) -> str:
    """Ingested chunks are ``doc#n``; the eval names documents."""
    return source_id.split("#", 1)[0]


def score(case: Case, answer: Answer) -> dict[str, Any]:
    declined = answer.kind == "decline"
    top3 = [doc_id(s) for s, _ in answer.sources[:3]]
    evidence = [t for _, t in answer.sources] + [m["content"] for m in case.messages]
    evidence += tool_evidence(answer.detail.get("tool_results", []))
    stated = [states(answer.text, f) for f in case.facts]
    claims = [] if declined else unsupported(answer.text, evidence)
    # The questions the answer says it cannot answer: each one it should, and no other.
    said = len(answer.detail.get("unanswered") or ())
    right = case.expect == "answer" and not declined and all(stated) and said == case.unanswered
    return {
        "id": case.id, "kind": case.kind, "expect": case.expect, "route": answer.route,
        "answer_kind": answer.kind, "declined": declined,
        "gold_at_3": any(g in top3 for g in case.gold) if case.gold else None,
        "facts_stated": sum(stated), "facts": len(stated),
        "correct": right,
        # Answered, but without what the customer asked (or without saying what it cannot
        # answer): worse than a decline.
        "wrong": case.expect == "answer" and not declined and not right,
        "unanswered_expected": case.unanswered, "unanswered_said": said,
        "unsupported": claims,
        "mid_sentence": not declined and ends_mid_sentence(answer.text),
        "elapsed_ms": round(answer.elapsed_ms, 2), "degraded": answer.degraded,
        "answer": answer.text, "sources": top3, **answer.detail,
    }


def failure(row: dict[str, Any]) -> str | None:
    """What went wrong with a scored case, in words (None: nothing)."""
    if row["expect"] == "decline":
        return None if row["declined"] else "answered, should decline"
    if row["declined"]:
        return f"declined ({row.get('decline') or 'no reason'})"
    if row["unsupported"]:
        return "unsupported: " + ", ".join(row["unsupported"])
    if _said(row) > _expected(row):
        return "said it cannot answer a question it can"
    if row["wrong"] and row["facts_stated"] < row["facts"]:
        return f"wrong: {row['facts_stated']} of {row['facts']} facts"
    if row["wrong"]:
        return "did not say what it cannot answer"
    return None


def _rate(rows: list[dict[str, Any]], key: str) -> float | None:
    return _share(rows, lambda r: bool(r[key]))


def _expected(row: dict[str, Any]) -> int:
    return int(row.get("unanswered_expected", 0))


def _said(row: dict[str, Any]) -> int:
    return int(row.get("unanswered_said", 0))


def _share(rows: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> float | None:
    return round(sum(test(r) for r in rows) / len(rows), 4) if rows else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answerable = [r for r in rows if r["expect"] == "answer"]
    answered = [r for r in rows if not r["declined"]]
    times = [r["elapsed_ms"] for r in rows]
    return {
        "n": len(rows),
        "gold_at_3": _rate([r for r in rows if r["gold_at_3"] is not None], "gold_at_3"),
        "fact_accuracy": _rate(answerable, "correct"),
        "unsupported_rate": _rate(answered, "unsupported"),
        "decline_rate_out_of_scope": _rate(
            [r for r in rows if r["kind"] in DECLINE_KINDS], "declined"),
        "decline_rate_unanswerable": _rate(
            [r for r in rows if r["kind"] == "unanswerable"], "declined"),
        "false_decline_rate": _rate(answerable, "declined"),
        "wrong_answer_rate": _rate(answerable, "wrong"),
        # Messages with a question the help centre does not answer: the answer said so.
        "unanswered_said_rate": _share([r for r in answerable if _expected(r)],
                                       lambda r: _said(r) >= _expected(r)),
        # Messages the help centre answers whole: the answer said it cannot answer a part.
        "answerable_said_unanswered_rate": _share(
            [r for r in answerable if not _expected(r)], lambda r: _said(r) > 0),
        "mid_sentence_rate": _rate(answered, "mid_sentence"),
        "p50_ms": _percentile(times, 0.50),
        "p95_ms": _percentile(times, 0.95),
        "p99_ms": _percentile(times, 0.99),
    }


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def group(key: str) -> dict[str, Any]:
        keys = sorted({str(r[key]) for r in rows})
        return {k: summarise([r for r in rows if str(r[key]) == k]) for k in keys}

    return {"overall": summarise(rows), "by_kind": group("kind"), "by_route": group("route")}


def evidence_sweep(rows: list[dict[str, Any]], bars: Sequence[float],
                   own_bars: set[str]) -> list[dict[str, Any]]:
    """What a higher ``answers.min_evidence`` would have done to these rows: each answer whose
    evidence is below the bar becomes a decline (not on ``own_bars``, the routes with a bar of
    their own, nor where a tool result answers). Exact for bars at or above the one the rows
    were run with: a decline would stay one, and its answer is unknown."""
    out = []
    for bar in bars:
        swept = []
        for r in rows:
            ev = r.get("evidence")
            if (not r["declined"] and ev is not None and ev < bar and r["route"] not in own_bars
                    and not r.get("tool_results")):
                r = {**r, "declined": True, "correct": False, "wrong": False}
            swept.append(r)
        s = summarise(swept)
        out.append({"min_evidence": bar, **{k: s[k] for k in (
            "fact_accuracy", "wrong_answer_rate", "false_decline_rate",
            "decline_rate_unanswerable")}})
    return out


Target = Callable[[Case], Awaitable[Answer]]


async def run_cases(target: Target, cases: Sequence[Case], *, concurrency: int = 1,
                    progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Every case through the target, ``concurrency`` at a time; rows in case order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> dict[str, Any]:
        async with gate:
            row = score(case, await target(case))
        if progress is not None:
            progress()
        return row

    return list(await asyncio.gather(*(one(c) for c in cases)))


def sdk_target(pipeline: Any, deadline_ms: float | None, history: bool = True) -> Target:
    """Cases through ``Pipeline.arun``: the last user message is the query, the earlier turns
    its history (or none, to measure what history handling adds)."""

    async def call(case: Case) -> Answer:
        r = await pipeline.arun(case.question, deadline_ms=deadline_ms, user_id=case.user,
                                history=list(case.history) if history else None)
        return Answer(r.answer, r.answer_kind, r.route,
                      [(s.id, f"{s.title}. {s.text}") for s in r.sources], r.elapsed_ms,
                      list(r.degraded), {"decline": r.decline, "finish_reason": r.finish_reason,
                                         "query": r.query, "query_form": r.query_form,
                                         "llm_call": r.llm_call, "evidence": r.evidence,
                                         "tool_results": r.tool_results,
                                         "unanswered": r.unanswered})

    return call


def http_target(client: Any, url: str, model: str, deadline_ms: float | None,
                texts: dict[str, str], history: bool = True) -> Target:
    """Cases through the OpenAI-compatible endpoint; source texts looked up in ``texts``
    (the knowledge base by document id), since the response names sources by id. A case's
    customer goes as OpenAI's ``user``; its transactions are the server's to hold."""

    async def call(case: Case) -> Answer:
        messages = list(case.messages) if history else [case.messages[-1]]
        body: dict[str, Any] = {"model": model, "messages": messages}
        if case.user is not None:
            body["user"] = case.user
        if deadline_ms is not None:
            body["deadline_ms"] = deadline_ms
        t0 = time.perf_counter()
        resp = await client.post(url.rstrip("/") + "/v1/chat/completions", json=body)
        elapsed = (time.perf_counter() - t0) * 1000.0
        resp.raise_for_status()
        data = resp.json()
        block = data.get("ragpacer", {})
        sources = [(s["id"], texts.get(doc_id(s["id"]), s.get("title", "")))
                   for s in block.get("sources", [])]
        return Answer(data["choices"][0]["message"]["content"] or "",
                      block.get("answer_kind", "llm"), block.get("route"), sources, elapsed,
                      list(block.get("degraded", [])),
                      {"decline": block.get("decline"), "evidence": block.get("evidence"),
                       "unanswered": block.get("unanswered", [])})

    return call



VARIANTS = ("shipped", "llm", "llm_grounded", "extractive")


def variant_overrides(variant: str, routes: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides that make every route with a model answer the variant's way;
    ``shipped`` is the configuration as it is."""
    if variant == "shipped":
        return {}
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return {"routing": {"routes": {
        name: {**route.model_dump(), "answer": variant}
        for name, route in routes.items() if route.model is not None}}}


async def seed_transactions(store: Any, cases: Sequence[Case]) -> None:
    """Each case's customer holds exactly that case's transactions, stamped now, in
    ``store`` (an ``agents.builtin.transactions`` store)."""
    for user in {c.user for c in cases if c.user is not None}:
        await store.clear(user)
    for case in cases:
        for tx in case.transactions:
            await store.add(case.user, tx)


async def compare(settings_for: Callable[[dict[str, Any]], Any], variants: Sequence[str],
                  cases: Sequence[Case], *, deadline_ms: float | None, concurrency: int,
                  history: bool = True,
                  say: Callable[[str], None] = print,
                  progress: Callable[[str, int], Callable[[], None]] | None = None,
                  ) -> dict[str, Any]:
    """Each variant over the same cases in one run, the response cache off. A managed engine
    (if the config has one and a variant asks the LLM) is started once and shared."""
    from ragpacer.pipeline.sdk import Pipeline

    off: dict[str, Any] = {"cache": {"enabled": False}}
    routes = settings_for(off).routing.routes
    needs_llm = any(v in ("llm", "llm_grounded") for v in variants) or (
        "shipped" in variants and settings_for(off).uses_llm)
    owner = Pipeline(settings_for(
        {**off, **variant_overrides("llm_grounded" if needs_llm else "shipped", routes)}))
    await owner.astart(say)
    await seed_transactions(owner.resources.transaction_store(owner.settings.redis_url), cases)
    shared = {"llm": {"engine": "external"}} if owner.engine is not None else {}
    out: dict[str, Any] = {}
    try:
        for variant in variants:
            pipeline = Pipeline(settings_for(
                {**off, **shared, **variant_overrides(variant, routes)}),
                resources=owner.resources)
            try:
                await pipeline.astart(say)
                tick = progress(variant, len(cases)) if progress else None
                rows = await run_cases(sdk_target(pipeline, deadline_ms, history), cases,
                                       concurrency=concurrency, progress=tick)
            finally:
                await pipeline.aclose()
            out[variant] = {"report": report(rows), "rows": rows}
    finally:
        await owner.aclose()
    return out

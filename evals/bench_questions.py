"""What splitting a message that asks several questions costs (`retrieval.split_questions`).

The 24 two-question cases of the answer-quality eval through the SDK, cache off, extractive
answers, one at a time: the retrieval stage and the whole request, with the split on and off,
alternating A B B A per round in one run (the two pipelines share the machine's state). The
one-question fact cases run beside them, where the split only costs the check that finds no
second question.

Rerun:  .venv/bin/python -m evals.bench_questions [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from evals.common import percentiles, save
from ragpacer.pipeline.core.settings import load_settings
from ragpacer.pipeline.sdk import Pipeline

CASES = Path(__file__).resolve().parent / "data" / "answer_quality.jsonl"


def pipeline(split: bool) -> Pipeline:
    overrides = {"cache": {"enabled": False}, "tracing": {"exporter": "none"},
                 "retrieval": {"split_questions": split},
                 "llm": {"engine": "external",
                         "models": [{"name": "smollm2", "url": "http://127.0.0.1:9/v1"}]}}
    return Pipeline(load_settings(Path("ragpacer.yaml"), environ={}, overrides=overrides))


def questions(kind: str) -> list[str]:
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    return [c["question"] for c in cases if c["kind"] == kind]


async def one_pass(p: Pipeline, asked: list[str], out: dict[str, list[float]]) -> None:
    for q in asked:
        r = await p.arun(q)
        out["retrieval"].append(next(s.elapsed_ms for s in r.stages if s.name == "retrieval"))
        out["request"].append(r.elapsed_ms)


async def run(rounds: int) -> dict:
    on, off = pipeline(True), pipeline(False)
    for p in (on, off):
        await p.astart()
    report = {}
    for kind in ("multi", "fact"):
        asked = questions(kind)
        times = {name: {"retrieval": [], "request": []} for name in ("on", "off")}
        for _ in range(rounds):  # A B B A
            for name, p in (("on", on), ("off", off), ("off", off), ("on", on)):
                await one_pass(p, asked, times[name])
        report[kind] = {name: {k: percentiles(v) for k, v in t.items()}
                        for name, t in times.items()}
        for part in ("retrieval", "request"):
            report[kind][f"{part}_p50_ratio"] = round(
                report[kind]["on"][part]["p50"] / report[kind]["off"][part]["p50"], 2)
    for p in (on, off):
        await p.aclose()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    report = asyncio.run(run(args.rounds))
    for kind, r in report.items():
        for name in ("on", "off"):
            ret, req = r[name]["retrieval"], r[name]["request"]
            print(f"{kind:6} split {name:3}  retrieval p50/p95/p99 {ret['p50']:.2f} / "
                  f"{ret['p95']:.2f} / {ret['p99']:.2f} ms   request {req['p50']:.2f} / "
                  f"{req['p95']:.2f} / {req['p99']:.2f} ms")
        print(f"{kind:6} on/off p50: retrieval {r['retrieval_p50_ratio']}x, "
              f"request {r['request_p50_ratio']}x")
    print("saved", save("bench_questions", report))


if __name__ == "__main__":
    main()

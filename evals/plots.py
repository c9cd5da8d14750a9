"""Plots of the benchmark results (matplotlib, PNG files next to the JSON they come from).

    .venv/bin/python -m evals.plots        # draws every figure whose results exist

- waterfall.png: per-stage p50, one bar per stage at its place in the request, per config
- latency_cdf.png: end-to-end latency CDFs, ragpacer against the baseline (same run)
- breach_vs_load.png: late, degraded and rejected shares and p99 against offered load
- soak.png: server resident memory and open descriptors over a soak run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt

from evals.common import RESULTS

ORDER = ["cache", "input_guardrails", "intent", "features", "retrieval", "tools",
         "generation", "grounding", "output_guardrails"]
PARALLEL = {"features", "retrieval", "tools"}  # ragpacer runs these side by side


def waterfall(result: dict[str, Any], out: Path, route: str = "fees") -> Path:
    """One route's stages (default: a RAG route with the LLM), p50 of each, in request order."""
    runs = result["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 1.6 + 1.2 * len(runs)), sharex=True)
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        t, branch_start, branch_end, rows = 0.0, None, 0.0, []
        for stage in ORDER:
            p = run.get("route_stages_ms", {}).get(route, run["stages_ms"]).get(stage)
            if not p or not p.get("n"):
                continue
            parallel = name != "baseline" and stage in PARALLEL
            if parallel:
                branch_start = t if branch_start is None else branch_start
                start = branch_start
                branch_end = max(branch_end, start + p["p50"])
            else:
                if branch_start is not None:
                    t, branch_start = branch_end, None
                start = t
                t += p["p50"]
            rows.append((stage, start, p["p50"]))
        for i, (stage, start, width) in enumerate(rows):
            ax.barh(i, max(width, 0.05), left=start, color=f"C{ORDER.index(stage)}")
            ax.text(start + width, i, f" {width:.1f} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_title(f"{name}: per-stage p50, route {route!r}", fontsize=9)
    axes[-1].set_xlabel("ms since the request arrived (symlog)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def latency_cdf(result: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in result["runs"].items():
        xs = sorted(run.get("e2e_samples_ms", []))
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (log)")
    ax.set_ylabel("share of requests")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def breach_vs_load(result: dict[str, Any], out: Path) -> Path:
    rows = [(k, v) for k, v in result.items() if k.startswith("budgets_")]
    labels = [k.replace("budgets_", "").replace("_", " ") for k, _ in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = range(len(rows))
    for i, (key, label) in enumerate([("late_rate", "late (> deadline + 50 ms)"),
                                      ("degraded_rate", "degraded"),
                                      ("rejected_rate", "rejected (503)")]):
        ax1.bar([x + (i - 1) * 0.27 for x in xs], [v.get(key) or 0 for _, v in rows],
                width=0.27, label=label)
    ax1.set_xticks(list(xs), labels)
    ax1.set_ylabel("share of requests")
    ax1.legend(fontsize=8)
    ax2.bar(list(xs), [v["e2e_ms"].get("p99", 0) for _, v in rows], color="C3")
    ax2.axhline(result["deadline_ms"] + 50, color="k", ls="--", lw=1, label="deadline + 50 ms")
    ax2.set_yscale("log")
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("p99 of answered requests, ms (log)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"offered load vs the sustainable {result['sustainable']['rps']} req/s")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def soak_curves(result: dict[str, Any], out: Path) -> Path:
    s = result["samples"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([x["t_s"] / 60 for x in s], [x["rss_mb"] for x in s], color="C0")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS, MB", color="C0")
    ax.set_ylim(0, max(x["rss_mb"] for x in s) * 1.2)
    ax2 = ax.twinx()
    ax2.plot([x["t_s"] / 60 for x in s], [x["fds"] for x in s], color="C1")
    ax2.set_ylabel("open file descriptors", color="C1")
    ax2.set_ylim(0, max(x["fds"] for x in s) * 1.5)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(results: Path = RESULTS) -> list[Path]:
    drawn = []
    for source, figures in (("baseline.json", [(waterfall, "waterfall.png"),
                                               (latency_cdf, "latency_cdf.png")]),
                            ("overload.json", [(breach_vs_load, "breach_vs_load.png")]),
                            ("soak.json", [(soak_curves, "soak.png")])):
        path = results / source
        if path.exists():
            data = json.loads(path.read_text())
            drawn += [draw(data, results / name) for draw, name in figures]
    for p in drawn:
        print(f"wrote {p}")
    return drawn


if __name__ == "__main__":
    main()

"""Small measurement helpers shared by the load generator and the eval scripts."""

from __future__ import annotations

import os
import statistics
from pathlib import Path


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(values), "p50": statistics.median(ordered), "p95": pick(0.95),
            "p99": pick(0.99), "mean": statistics.fmean(ordered)}


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (the engine and its workers)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024

"""Helpers shared by the benchmark scripts: percentiles, process memory, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from ragpacer.pipeline.bench.measure import group_rss_mb, percentiles

__all__ = ["RESULTS", "group_rss_mb", "machine", "percentiles", "save"]

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M")}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path

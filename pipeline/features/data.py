"""The demo customers' precomputed features, written as the parquet Feast reads.

Kept outside feature_repo/ on purpose: Feast executes every .py there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def write_demo_customers(path: Path, n: int = 1000, seed: int = 7) -> Path:
    import pandas as pd

    rng = np.random.default_rng(seed)
    tiers = rng.choice(["standard", "premium", "business"], size=n, p=[0.7, 0.2, 0.1])
    frame = pd.DataFrame({
        "customer_id": [f"c-{i:04d}" for i in range(n)],
        "lifetime_value_eur": np.round(rng.gamma(2.0, 900.0, size=n), 2),
        "tier": tiers,
        "tenure_months": rng.integers(1, 240, size=n),
        "open_tickets": rng.poisson(0.3, size=n),
        "products_held": rng.integers(1, 6, size=n),
        "event_timestamp": pd.Timestamp(datetime.now(UTC)).floor("s"),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path

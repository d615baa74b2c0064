"""A synthetic customer table: numeric usage features, a plan, and whether the customer left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC = ["tenure", "monthly_spend", "support_calls", "usage_drop"]
CATEGORICAL = ["plan"]
PLANS = ["basic", "plus", "pro"]


def make_customers(rows: int, *, seed: int = 0, first_id: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "customer_id": np.arange(first_id, first_id + rows),
        "tenure": rng.gamma(2.0, 12.0, rows),
        "monthly_spend": rng.normal(60, 20, rows),
        "support_calls": rng.poisson(1.5, rows).astype(float),
        "usage_drop": rng.normal(0, 1, rows),
        "plan": rng.choice(PLANS, rows),
    })
    risk = (-0.05 * frame.tenure + 0.6 * frame.support_calls + 1.2 * frame.usage_drop
            + np.where(frame.plan == "basic", 0.8, -0.4) + rng.normal(0, 0.5, rows))
    frame["churned"] = (risk > np.quantile(risk, 0.7)).astype(int)  # about 30% leave
    return frame


def write_batch(directory: Path, name: str, rows: int, *, seed: int, first_id: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.parquet"
    make_customers(rows, seed=seed, first_id=first_id).to_parquet(path, index=False)
    return path

"""scikit-learn's bundled diabetes set (442 patients, ten baseline measurements) as parquet batches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.datasets import load_diabetes

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
LABEL = "progression"


def patients() -> pd.DataFrame:
    """Every patient: `patient` (the row key), the features and `progression` one year on."""
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": LABEL})
    frame.insert(0, "patient", range(len(frame)))
    return frame


def write_batch(directory: Path, name: str, start: int, stop: int) -> Path:
    """Patients `start`..`stop` as `<directory>/<name>.parquet`, one batch of the stream."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.parquet"
    patients().iloc[start:stop].to_parquet(path, index=False)
    return path

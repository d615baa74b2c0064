"""Small synthetic tabular data sets with a learnable signal, and specs that describe them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ctloop.modelspec import DataSchema, Feature, ModelSpec, TrainParams


def make_frame(rows: int = 400, *, seed: int = 0, task: str = "binary", offset: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(loc=3.0, scale=2.0, size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    signal = x1 + 0.5 * (x2 - 3.0) + np.where(color == "red", 1.0, -0.5)
    if task == "regression":
        label = signal + rng.normal(scale=0.1, size=rows)
    elif task == "multiclass":
        label = np.digitize(signal, [-0.7, 0.7])
    else:
        label = (signal > 0).astype(int)
    return pd.DataFrame({"id": np.arange(offset, offset + rows), "x1": x1, "x2": x2, "color": color, "label": label})


def make_spec(task: str = "binary", *, name: str = "churn", epochs: int = 8, **train: object) -> ModelSpec:
    classes = {"binary": (0, 1), "multiclass": (0, 1, 2), "regression": None}[task]
    return ModelSpec(
        name=name,
        data=DataSchema(
            features=(Feature(name="x1"), Feature(name="x2"), Feature(name="color", kind="categorical")),
            label="label", task=task, classes=classes, key="id", min_rows=50,
        ),
        train=TrainParams(**{"hidden": (16, 8), "epochs": epochs, "batch_size": 64, "lr": 0.01, "patience": 3,
                             **train}),
    )


def write_dataset(
    directory: Path, *, files: int = 2, rows: int = 200, task: str = "binary", fmt: str = "parquet"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        frame = make_frame(rows, seed=i, task=task, offset=i * rows)
        path = directory / f"part-{i}.{fmt}"
        frame.to_parquet(path, index=False) if fmt == "parquet" else frame.to_csv(path, index=False)
    return directory


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny; on a shared CI host extra intra-op threads only spin against other tenants."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

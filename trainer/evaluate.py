"""Challenger against champion on the same held-out data; the result feeds the promotion policy.

Both models are loaded through `mlflow.pyfunc.load_model` and scored by the same metrics, whatever
trained them. Tables are held out by row identity, file datasets by file digest (ctloop.trainer.split).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop.evaluation import Evaluation
from ctloop.modelspec import ModelSpec
from ctloop.references import forget, resolve
from ctloop.snapshot import Snapshot, SnapshotObject, load_frame, materialize
from ctloop.trainer.labels import class_list, label_key
from ctloop.trainer.metrics import score
from ctloop.trainer.split import split_files, split_frame


@dataclass(frozen=True)
class Holdout:
    """Model inputs and true labels of the held-out data, and a digest naming exactly that data."""

    inputs: Any
    labels: pd.Series
    digest: str

    def __len__(self) -> int:
        return len(self.labels)


def holdout_frame(snapshot: Snapshot, spec: ModelSpec, *, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """The rows training held out, rebuilt from the data by the same hash split."""
    return split_frame(load_frame(snapshot, s3_endpoint_url=s3_endpoint_url), spec).holdout


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of the frame's rows and columns, to record which holdout an evaluation used."""
    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def table_holdout(frame: pd.DataFrame, spec: ModelSpec) -> Holdout:
    missing = [c for c in [*spec.data.feature_names, spec.data.label] if c not in frame.columns]
    if missing:
        raise ValueError(f"holdout lacks columns {missing} declared by the spec of {spec.name!r}")
    return Holdout(frame[spec.data.feature_names], frame[spec.data.label], frame_digest(frame))


def file_holdout(snapshot: Snapshot, held: tuple[SnapshotObject, ...], spec: ModelSpec, workdir: Path, *,
                 s3_endpoint_url: str | None = None) -> Holdout:
    """The held-out files, copied under `workdir` and turned into model input by the spec's `data.inputs`."""
    paths = materialize(snapshot, held, workdir, s3_endpoint_url=s3_endpoint_url)
    h = hashlib.sha256(b"ctloop-file-holdout-v1\n")
    for obj in held:
        h.update(f"{obj.etag}\n".encode())
    inputs = resolve(spec.data.inputs or "", "data.inputs")(list(paths)) if paths else None
    return Holdout(inputs, pd.Series([p.parent.name for p in paths], dtype=object), h.hexdigest())


def load_holdout(snapshot: Snapshot, spec: ModelSpec, workdir: Path, *, s3_endpoint_url: str | None = None) -> Holdout:
    if spec.data.kind == "files":
        held = split_files(snapshot, spec).holdout
        return file_holdout(snapshot, held, spec, workdir, s3_endpoint_url=s3_endpoint_url)
    return table_holdout(holdout_frame(snapshot, spec, s3_endpoint_url=s3_endpoint_url), spec)


def evaluate(
    challenger_uri: str,
    champion_uri: str | None,
    holdout: Holdout | pd.DataFrame,
    spec: ModelSpec,
    *,
    champion_version: str | None = None,
    holdout_digest: str | None = None,
    tracking_uri: str | None = None,
) -> Evaluation:
    """Score the challenger, and the champion when there is one, on exactly the same held-out data.
    `runs:/` and `models:/` URIs resolve against `tracking_uri` (default: MLflow's own, which in a process
    whose train step was served from the memo cache is nobody's)."""
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
    held = table_holdout(holdout, spec) if isinstance(holdout, pd.DataFrame) else holdout
    if len(held) == 0:
        raise ValueError(f"empty holdout for model {spec.name!r}: nothing to evaluate on")
    return Evaluation(
        model=spec.name,
        challenger_uri=challenger_uri,
        challenger=score_model(challenger_uri, held, spec),
        champion_version=champion_version,
        champion=score_model(champion_uri, held, spec) if champion_uri else None,
        holdout_digest=holdout_digest or held.digest,
        holdout_rows=len(held),
    )


def score_model(model: str | Any, holdout: Holdout, spec: ModelSpec) -> dict[str, float]:
    """Metrics of a pyfunc model (a URI, or one already loaded) on the holdout."""
    import mlflow.pyfunc

    if isinstance(model, str):
        if spec.trainer:  # each version unpickles with its own logged copy of the package, not one loaded before
            forget(spec.trainer)
        loaded = mlflow.pyfunc.load_model(model)
    else:
        loaded = model
    extra = {name: resolve(ref, f"metric {name!r}") for name, ref in spec.metrics.items()}
    if spec.data.task == "regression":
        values = np.asarray(loaded.predict(holdout.inputs), dtype=np.float64).reshape(-1)
        return score("regression", (), holdout.labels, values, extra=extra)
    proba = None
    if _declares_output_param(loaded):
        out = loaded.predict(holdout.inputs, params={"output": "proba"})
        if isinstance(out, pd.DataFrame):
            proba = out
    if proba is not None:
        classes = tuple(map(label_key, proba.columns))
        probabilities = proba.to_numpy(dtype=np.float64)
        predictions = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
        return score(spec.data.task, classes, holdout.labels, predictions, probabilities, extra=extra)
    predictions = np.asarray(loaded.predict(holdout.inputs), dtype=object).reshape(-1)
    return score(spec.data.task, class_list(spec.data, holdout.labels), holdout.labels, predictions, extra=extra)


def _declares_output_param(loaded: Any) -> bool:
    schema = loaded.metadata.get_params_schema()
    return schema is not None and any(p.name == "output" for p in schema.params)

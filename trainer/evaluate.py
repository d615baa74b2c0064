"""Challenger against champion on the same held-out rows; the result feeds the promotion policy."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ctloop.evaluation import Evaluation
from ctloop.modelspec import ModelSpec
from ctloop.trainer.labels import class_list
from ctloop.trainer.metrics import score
from ctloop.trainer.snapshot import Snapshot, load_frame
from ctloop.trainer.split import split_frame


def holdout_frame(snapshot: Snapshot, spec: ModelSpec, *, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """The rows training held out, rebuilt from the data by the same hash split."""
    return split_frame(load_frame(snapshot, s3_endpoint_url=s3_endpoint_url), spec).holdout


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of the frame's rows and columns, to record which holdout an evaluation used."""
    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def evaluate(
    challenger_uri: str,
    champion_uri: str | None,
    holdout: pd.DataFrame,
    spec: ModelSpec,
    *,
    champion_version: str | None = None,
    holdout_digest: str,
) -> Evaluation:
    """Score the challenger, and the champion when there is one, on exactly the rows of `holdout`."""
    if len(holdout) == 0:
        raise ValueError(f"empty holdout for model {spec.name!r}: nothing to evaluate on")
    missing = [c for c in [*spec.data.feature_names, spec.data.label] if c not in holdout.columns]
    if missing:
        raise ValueError(f"holdout lacks columns {missing} declared by the spec of {spec.name!r}")
    return Evaluation(
        model=spec.name,
        challenger_uri=challenger_uri,
        challenger=score_model(challenger_uri, holdout, spec),
        champion_version=champion_version,
        champion=score_model(champion_uri, holdout, spec) if champion_uri else None,
        holdout_digest=holdout_digest,
        holdout_rows=len(holdout),
    )


def score_model(model_uri: str, holdout: pd.DataFrame, spec: ModelSpec) -> dict[str, float]:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    features = holdout[spec.data.feature_names]
    labels = holdout[spec.data.label]
    if spec.data.task == "regression":
        values = np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
        return score("regression", (), labels, values)
    proba = model.predict(features, params={"output": "proba"})
    classes = tuple(map(str, proba.columns)) if isinstance(proba, pd.DataFrame) else class_list(spec.data, labels)
    return score(spec.data.task, classes, labels, np.asarray(proba, dtype=np.float64))

"""What a training run records in MLflow, so every model version can be traced to its data and code.

Params, tags and per-epoch metrics go in `log_batch` calls (a handful of requests per run, not one per
value); the model as a pyfunc with pinned requirements, an input example and a signature; the data as
a run input carrying the snapshot digest; the training data's reference profile for the drift monitor.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ctloop.modelspec import ModelSpec
from ctloop.profile import PROFILE_ARTIFACT
from ctloop.snapshot import Snapshot
from ctloop.version import code_version

MODEL_NAME = "model"
SPEC_ARTIFACT = "model_spec.json"
_PINNED = ("torch", "numpy", "pandas", "pydantic", "mlflow", "scikit-learn")
_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite tracking store go beside the database file, not under the working directory."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").resolve().as_uri()


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # a concurrent run of the same model created it first
        if experiment is None:
            raise
        return experiment.experiment_id


def run_tags(spec: ModelSpec, snapshot: Snapshot, event_id: str | None, trainer_version: str) -> dict[str, str]:
    tags = {
        "ctloop.model": spec.name,
        "ctloop.data_digest": snapshot.digest,
        "ctloop.snapshot_uri": snapshot.uri,
        "ctloop.code_version": code_version(),
        "ctloop.trainer": spec.trainer or "builtin",
        "ctloop.trainer_code_version": trainer_version,
        "ctloop.seed": str(spec.train.seed),
    }
    if event_id:
        tags["ctloop.event_id"] = event_id
    return tags


def run_params(spec: ModelSpec, params: dict[str, object], *, rows: dict[str, int], device: str,
               world_size: int) -> dict[str, str]:
    """The trainer's params as given, and ctloop's own (seed, split shares, schema, device, row counts)."""
    shown = {k: ",".join(map(str, v)) if isinstance(v, tuple | list) else str(v) for k, v in params.items()}
    shown |= {k: str(getattr(spec.train, k)) for k in ("seed", "holdout_share", "val_share")}
    shown |= {
        "task": spec.data.task,
        "label": spec.data.label,
        "features": ",".join(spec.data.feature_names),
        "categorical": ",".join(spec.data.categorical),
        "device": device,
        "world_size": str(world_size),
    }
    shown |= {f"rows_{part}": str(n) for part, n in rows.items()}
    return {k: v[:6000] for k, v in shown.items()}  # MLflow's limit on a param value


def log_batched(client: MlflowClient, run_id: str, *, metrics: Sequence[Metric] = (),
                params: Sequence[Param] = (), tags: Sequence[RunTag] = ()) -> None:
    """Everything in as few requests as the tracking server's per-request limits allow."""
    chunks = {"metrics": list(metrics), "params": list(params), "tags": list(tags)}
    while any(chunks.values()):
        batch = {kind: items[:_BATCH_LIMITS[kind]] for kind, items in chunks.items()}
        client.log_batch(run_id, **batch)
        chunks = {kind: items[_BATCH_LIMITS[kind]:] for kind, items in chunks.items()}


def log_dataset(frame: pd.DataFrame, spec: ModelSpec, snapshot: Snapshot) -> None:
    """The training data as a run input (active run), identified by the snapshot digest; for a files
    dataset, the list of training files and their labels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "source can be interpreted in multiple ways": both are local
        dataset = mlflow.data.from_pandas(
            frame, source=snapshot.uri, targets=spec.data.label or "label", name=f"{spec.name}@{snapshot.digest[:12]}",
            digest=snapshot.digest[:36],  # MLflow caps dataset digests at 36 characters
        )
    mlflow.log_input(dataset, context="training", tags={"ctloop.data_digest": snapshot.digest})


def log_profile(client: MlflowClient, run_id: str, frame: pd.DataFrame, spec: ModelSpec) -> None:
    """The monitored columns' reference profile: the declared features, or (files datasets, or a spec's
    `monitor` section) the numeric and text columns of `frame` as given."""
    from ctloop.profile import build_profile

    if spec.data.kind == "table" and not spec.monitor.featurize:
        numeric, categorical = spec.data.numeric, spec.data.categorical
    else:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        categorical = [c for c in frame.columns if c not in numeric]
    if spec.monitor.columns:
        keep = set(spec.monitor.columns)
        numeric, categorical = [c for c in numeric if c in keep], [c for c in categorical if c in keep]
    profile = build_profile(frame, numeric=numeric, categorical=categorical, seed=spec.train.seed)
    client.log_text(run_id, profile.model_dump_json(), PROFILE_ARTIFACT)


def log_model(python_model: mlflow.pyfunc.PythonModel, input_example: object, *, artifacts: dict[str, str],
              code_paths: list[str], predict_params: dict[str, object]) -> None:
    """Log the pyfunc in the active run, with the user's package as code (a fresh process imports it from
    the model) and pinned requirements (MLflow then skips its slow inference of them)."""
    example = input_example.reset_index(drop=True) if isinstance(input_example, pd.DataFrame) else input_example
    mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=python_model,
        artifacts=artifacts or None,
        code_paths=code_paths or None,
        pip_requirements=pinned_requirements(),
        input_example=(example, dict(predict_params)) if predict_params else example,
    )


def log_spec(client: MlflowClient, run_id: str, spec: ModelSpec) -> None:
    client.log_text(run_id, json.dumps(spec.model_dump(mode="json"), indent=2), SPEC_ARTIFACT)


def pinned_requirements() -> list[str]:
    """Exact versions of what the model needs to load; MLflow then skips its slow inference of them."""
    reqs = []
    for name in _PINNED:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs

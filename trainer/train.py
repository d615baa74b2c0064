"""The runner: snapshot in, MLflow run with a logged, smoke-tested model out. The function the train step calls.

It loads and splits the pinned data (the holdout never reaches user code), imports the spec's trainer
(`package.module:function`, default the built-in MLP), applies the seed, opens the run, calls the
trainer with a `ctloop.TrainContext`, checks what comes back, logs it as a pyfunc with the user's package
as code, loads it back through `mlflow.pyfunc.load_model`, predicts on the input example and scores it on
the holdout. Any failure marks the run FAILED (a trainer's traceback is logged on it) and nothing is left
for the later steps to register.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from ctloop.failures import Failure
from ctloop.modelspec import ModelSpec
from ctloop.references import BadReference, import_fresh, package_dir, resolve
from ctloop.snapshot import Snapshot, load_frame, materialize
from ctloop.trainer import distributed, lineage
from ctloop.trainer.evaluate import Holdout, file_holdout, frame_digest, score_model, table_holdout
from ctloop.trainer.mlp import REFERENCE as BUILTIN
from ctloop.trainer.split import split_files, split_frame
from ctloop.trainer.validation import check_frame
from ctloop.trainer.version import trainer_version
from ctloop.training import TrainContext, TrainResult

_FLUSH_EVERY_S = 30.0
ERROR_ARTIFACT = "trainer_error.txt"


class TrainerFailed(RuntimeError, Failure):
    """The user's trainer raised, returned something unusable, or its model failed on its own input example."""


class TrainedRun(BaseModel):
    """What one run produced: where the model is, its holdout metrics, and what it was made from."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    """Holdout metrics (ctloop.modelspec's *_METRICS) and the trainer's own (e.g. best_val_loss, epochs)."""
    weight_hash: str
    data_digest: str
    trainer_version: str


def load_trainer(spec: ModelSpec) -> Callable[[TrainContext], TrainResult]:
    """The spec's trainer function, checked to take exactly one argument (the context)."""
    reference = spec.trainer or BUILTIN
    # A user's package is imported anew: a long-lived process (the sensor's in-process steps) trains the code
    # on disk, which `trainer_version` names, not a copy imported before an edit or from a loaded model.
    fn = import_fresh(reference, "trainer") if spec.trainer else resolve(reference, "trainer")
    try:
        inspect.signature(fn).bind(object())
    except TypeError:
        raise BadReference(f"trainer {reference!r} must take one argument, a ctloop.TrainContext; its signature "
                           f"is {fn.__name__}{inspect.signature(fn)}") from None
    except ValueError:
        pass  # a builtin or C function without a readable signature: let the call decide
    return fn


def trainer_params(spec: ModelSpec) -> dict[str, Any]:
    """What `TrainContext.params` holds: the spec's `params`; for the built-in, its `train` section under them."""
    if spec.trainer is None:
        return {**spec.train.model_dump(), **spec.params}
    return dict(spec.params)


def train(
    snapshot: Snapshot,
    spec: ModelSpec,
    *,
    tracking_uri: str,
    event_id: str | None = None,
    checkpoint_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
    device: str | None = None,
) -> TrainedRun:
    """Train `spec`'s trainer on exactly the snapshot's data and log the run; deterministic given the seed
    as far as the trainer is. Under torchrun every rank calls this; rank 0 alone writes to MLflow."""
    fn = load_trainer(spec)
    version = trainer_version(spec)
    target = distributed.select_device(device)
    ctx = distributed.start(target)
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-train-") as scratch:
            return _run(fn, version, snapshot, spec, ctx, target, Path(scratch), tracking_uri=tracking_uri,
                        event_id=event_id, checkpoint_dir=checkpoint_dir, s3_endpoint_url=s3_endpoint_url)
    finally:
        distributed.stop(ctx)


class _Data:
    """The split data: what the trainer sees, what the holdout scoring sees, and the rows per part."""

    def __init__(self, snapshot: Snapshot, spec: ModelSpec, scratch: Path, s3: str | None) -> None:
        self.fields: dict[str, Any] = {}
        if spec.data.kind == "table":
            frame = load_frame(snapshot, s3_endpoint_url=s3)
            check_frame(snapshot.uri, frame, spec.data)
            parts = split_frame(frame, spec)
            self.fields = {"train": parts.train, "validation": parts.val}
            self.train_frame = parts.train
            self.rows = {"train": len(parts.train), "val": len(parts.val), "holdout": len(parts.holdout)}
            self.holdout: Callable[[], Holdout] = lambda: table_holdout(
                parts.holdout if len(parts.holdout) else parts.val, spec)
            self.holdout_digest = frame_digest(parts.holdout)
        else:
            files = split_files(snapshot, spec)
            for part, objects in (("train", files.train), ("validation", files.val)):
                paths = tuple(materialize(snapshot, objects, scratch / "data" / part, s3_endpoint_url=s3))
                self.fields[f"{part}_files"] = paths
                self.fields[f"{part}_labels"] = tuple(p.parent.name for p in paths)
            self.train_frame = pd.DataFrame({"file": [p.name for p in self.fields["train_files"]],
                                             "label": list(self.fields["train_labels"])})
            self.rows = {"train": len(files.train), "val": len(files.val), "holdout": len(files.holdout)}
            held = files.holdout if files.holdout else files.val
            self.holdout = lambda: file_holdout(snapshot, held, spec, scratch / "data" / "holdout",
                                                s3_endpoint_url=s3)
            self.holdout_digest = ""
        if self.rows["train"] == 0:
            raise ValueError(f"{snapshot.uri}: no rows left for training after the holdout/validation split")


def _run(fn, version, snapshot, spec, ctx, device, scratch, *, tracking_uri, event_id, checkpoint_dir,
         s3_endpoint_url) -> TrainedRun:
    data = _Data(snapshot, spec, scratch, s3_endpoint_url)
    # Other ranks never open the tracking store (a SQLite one would be migrated by each).
    client = MlflowClient(tracking_uri) if ctx.is_main else None

    def open_run() -> str:
        assert client is not None
        mlflow.set_tracking_uri(tracking_uri)
        experiment = lineage.experiment_id(client, spec.name, lineage.default_artifact_location(tracking_uri))
        return client.create_run(experiment, tags=lineage.run_tags(spec, snapshot, event_id, version),
                                 run_name=f"{spec.name}-{snapshot.digest[:8]}").info.run_id

    run_id = distributed.from_main(ctx, open_run)
    metrics = _MetricBuffer(client, run_id)
    try:
        return _train_and_log(fn, version, snapshot, spec, data, ctx, device, scratch, client, run_id, metrics,
                              checkpoint_dir)
    except BaseException:
        if client is not None:
            metrics.flush()
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise


def _train_and_log(fn, version, snapshot, spec, data, ctx, device, scratch, client, run_id, metrics,
                   checkpoint_dir) -> TrainedRun:
    params = trainer_params(spec)
    output_dir = scratch / "output"
    output_dir.mkdir()
    context = TrainContext(
        params=params, seed=spec.train.seed, device=device, output_dir=output_dir, schema=spec.data,
        data_digest=snapshot.digest, checkpoint_dir=checkpoint_dir, rank=ctx.rank, world_size=ctx.world_size,
        _log=metrics.add if client is not None else None, **data.fields,
    )
    _seed(spec.train.seed)
    reference = spec.trainer or BUILTIN
    try:
        result = fn(context)
    except Exception as exc:
        text = traceback.format_exc()
        print(text, file=sys.stderr)  # the step's log
        if client is not None:
            client.log_text(run_id, text, ERROR_ARTIFACT)
            client.set_tag(run_id, "ctloop.failure", f"trainer raised {type(exc).__name__}: {exc}"[:5000])
        raise TrainerFailed(f"trainer {reference!r} raised {type(exc).__name__}: {exc} "
                            f"(traceback in run {run_id}, artifact {ERROR_ARTIFACT})") from exc
    python_model, artifacts = _as_pyfunc(result, reference)
    weights = _weight_hash(python_model, artifacts)

    def log_and_score() -> str:
        assert client is not None
        return _log_and_score(version, snapshot, spec, data, ctx, device, client, run_id, metrics, context,
                              result, python_model, artifacts, weights).model_dump_json()

    # Rank 0 logs and scores; every rank gets the outcome, a failure included.
    return TrainedRun.model_validate_json(distributed.from_main(ctx, log_and_score))


def _log_and_score(version, snapshot, spec, data, ctx, device, client, run_id, metrics, context, result,
                   python_model, artifacts, weights) -> TrainedRun:
    reference = spec.trainer or BUILTIN
    params = trainer_params(spec)
    code = package_dir(reference) if spec.trainer else None
    # start_run checks the run against the process's active experiment, which other code in a
    # long-lived process (an engine, a sensor) may have set to another one.
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        lineage.log_dataset(data.train_frame, spec, snapshot)
        lineage.log_model(python_model, result.input_example, artifacts={k: str(v) for k, v in artifacts.items()},
                          code_paths=[str(code)] if code else [], predict_params=dict(result.predict_params))
    model_uri = f"runs:/{run_id}/{lineage.MODEL_NAME}"
    loaded = _smoke_test(model_uri, result.input_example, reference)
    holdout = data.holdout()
    scored = score_model(loaded, holdout, spec)
    own = {k: float(v) for k, v in result.metrics.items()}
    lineage.log_batched(
        client, run_id,
        metrics=[*metrics.drain(), *(Metric(k, v, _now(), 0) for k, v in {**own, **scored}.items())],
        params=[Param(k, v) for k, v in lineage.run_params(spec, params, rows=data.rows, device=str(device),
                                                            world_size=ctx.world_size).items()],
        tags=[RunTag("ctloop.weight_hash", weights),
              RunTag("ctloop.holdout_digest", data.holdout_digest or holdout.digest)],
    )
    lineage.log_spec(client, run_id, spec)
    lineage.log_profile(client, run_id, _profile_frame(spec, data, context), spec)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return TrainedRun(run_id=run_id, model_uri=model_uri, metrics={**scored, **own}, weight_hash=weights,
                      data_digest=snapshot.digest, trainer_version=version)


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _as_pyfunc(result: object, reference: str) -> tuple[mlflow.pyfunc.PythonModel, dict[str, Path]]:
    """The trainer's result as a PythonModel and its artifacts, or a TrainerFailed naming what is wrong."""
    import torch

    from ctloop.trainer.pyfunc import ModulePyfunc

    if not isinstance(result, TrainResult):
        raise TrainerFailed(f"trainer {reference!r} returned {type(result).__name__}, not a ctloop.TrainResult")
    if result.input_example is None:
        raise TrainerFailed(f"trainer {reference!r}: TrainResult.input_example is None; give a few rows of model input")
    model = result.model
    if isinstance(model, mlflow.pyfunc.PythonModel):
        return model, dict(result.artifacts)
    if isinstance(model, torch.nn.Module):
        if result.predict is None:
            raise TrainerFailed(f"trainer {reference!r} returned a torch.nn.Module without TrainResult.predict, "
                                "the function (module, model_input) -> predictions that serving calls")
        takes_params = "params" in inspect.signature(result.predict).parameters
        module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        return ModulePyfunc(module.cpu().eval(), result.predict, takes_params=takes_params), dict(result.artifacts)
    raise TrainerFailed(f"trainer {reference!r} returned a model of type {type(model).__module__}."
                        f"{type(model).__qualname__}; expected an mlflow.pyfunc.PythonModel instance or a "
                        "torch.nn.Module (with predict=...)")


def _smoke_test(model_uri: str, example: object, reference: str):
    """Load the logged model as serving will and predict on the input example; the loaded model is returned."""
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
        out = loaded.predict(example)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise TrainerFailed(f"the model of trainer {reference!r} fails on its own input example after logging: "
                            f"{type(exc).__name__}: {exc}") from exc
    rows = len(example) if hasattr(example, "__len__") else None
    if rows is not None and hasattr(out, "__len__") and len(out) != rows:
        raise TrainerFailed(f"the model of trainer {reference!r} returned {len(out)} predictions for "
                            f"{rows} input rows")
    return loaded


def _weight_hash(python_model: mlflow.pyfunc.PythonModel, artifacts: Mapping[str, Path]) -> str:
    """sha256 of the pickled model and its artifact files: equal iff the trained models are."""
    import cloudpickle

    h = hashlib.sha256(cloudpickle.dumps(python_model))
    for name, root in sorted(artifacts.items()):
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for path in files:
            h.update(f"{name}/{path.relative_to(root) if path != Path(root) else path.name}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _profile_frame(spec: ModelSpec, data: _Data, context: TrainContext) -> pd.DataFrame:
    """The training inputs the monitor's reference profile describes (featurized when the spec says so)."""
    if spec.data.kind == "table":
        inputs: Any = data.train_frame[spec.data.feature_names]
    else:
        inputs = resolve(spec.data.inputs or "", "data.inputs")(list(context.train_files))
    if spec.monitor.featurize:
        inputs = resolve(spec.monitor.featurize, "monitor.featurize")(inputs)
    return inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(np.asarray(inputs).reshape(len(inputs), -1))


def _now() -> int:
    return int(time.time() * 1000)


class _MetricBuffer:
    """TrainContext.log_metrics lands here; sent in batches (one at the end of a short run, else every 30 s)."""

    def __init__(self, client: MlflowClient | None, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[Metric] = []
        self.sent_at = time.monotonic()

    def add(self, values: Mapping[str, float], step: int | None) -> None:
        now = _now()
        self.pending += [Metric(k, v, now, step or 0) for k, v in values.items()]
        if len(self.pending) >= 1000 or time.monotonic() - self.sent_at > _FLUSH_EVERY_S:
            self.flush()

    def drain(self) -> list[Metric]:
        pending, self.pending = self.pending, []
        return pending

    def flush(self) -> None:
        if self.client is not None and self.pending:
            lineage.log_batched(self.client, self.run_id, metrics=self.drain())
        self.sent_at = time.monotonic()


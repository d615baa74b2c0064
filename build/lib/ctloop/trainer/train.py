"""One training run: snapshot in, MLflow run with a logged model out. The function a workflow step calls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow
from mlflow.entities import Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from ctloop.modelspec import ModelSpec
from ctloop.trainer import distributed, lineage
from ctloop.trainer.evaluate import frame_digest
from ctloop.trainer.loop import Tensors, deterministic, fit
from ctloop.trainer.metrics import score
from ctloop.trainer.model import Encoder, TabularModel, build_module, weight_hash
from ctloop.trainer.snapshot import Snapshot, load_frame
from ctloop.trainer.split import split_frame
from ctloop.trainer.validation import check_frame


class TrainResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    """Holdout metrics (accuracy, f1, log_loss or rmse, mae, r2) and the best validation loss."""
    weight_hash: str
    data_digest: str
    epochs_run: int


def train(
    snapshot: Snapshot,
    spec: ModelSpec,
    *,
    tracking_uri: str,
    event_id: str | None = None,
    checkpoint_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train `spec`'s model on exactly the snapshot's data and log the run; deterministic given the seed.

    Under torchrun with WORLD_SIZE > 1 every rank calls this; rank 0 alone writes to MLflow and all
    ranks return the same result.
    """
    frame = load_frame(snapshot, s3_endpoint_url=s3_endpoint_url)
    check_frame(snapshot.uri, frame, spec.data)
    parts = split_frame(frame, spec)
    if len(parts.train) == 0:
        raise ValueError(f"{snapshot.uri}: no rows left for training after the holdout/validation split")
    target = distributed.select_device(device)
    ctx = distributed.start(target)
    try:
        return _run(snapshot, spec, parts, ctx, target, tracking_uri=tracking_uri,
                    event_id=event_id, checkpoint_dir=checkpoint_dir)
    finally:
        distributed.stop(ctx)


def _run(snapshot, spec, parts, ctx, device, *, tracking_uri, event_id, checkpoint_dir) -> TrainResult:
    client: MlflowClient | None = None
    run_id = ""
    if ctx.is_main:  # other ranks never open the tracking store (a SQLite one would be migrated by each)
        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri)
        experiment = lineage.experiment_id(client, spec.name, lineage.default_artifact_location(tracking_uri))
        run_id = client.create_run(experiment, tags=lineage.run_tags(spec, snapshot, event_id),
                                   run_name=f"{spec.name}-{snapshot.digest[:8]}").info.run_id
    run_id = distributed.broadcast(run_id, ctx)
    try:
        return _train_and_log(snapshot, spec, parts, ctx, device, client, run_id, checkpoint_dir)
    except BaseException:
        if client is not None:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise


def _train_and_log(snapshot, spec, parts, ctx, device, client, run_id, checkpoint_dir) -> TrainResult:
    with deterministic(spec.train.seed):
        encoder = Encoder.fit(parts.train, spec.data)
        module = build_module(encoder, spec.train.hidden).to(device)
        wrapped = distributed.wrap(module, ctx, device)
        fingerprint = hashlib.sha256(f"{snapshot.digest}\n{spec.model_dump_json()}".encode()).hexdigest()
        fitted = fit(wrapped, _tensors(encoder, parts.train, spec), _tensors(encoder, parts.val, spec),
                     spec.train, spec.data.task, device=device, ctx=ctx,
                     checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
    model = TabularModel(encoder, spec.train.hidden, module.cpu().eval())
    holdout = parts.holdout if len(parts.holdout) else parts.val
    metrics = score(spec.data.task, encoder.classes, holdout[spec.data.label], model.raw(holdout))
    metrics["val_loss"] = fitted.best_val_loss
    digest = weight_hash(module, encoder)
    if client is not None:
        rows = {"train": len(parts.train), "val": len(parts.val), "holdout": len(parts.holdout)}
        params = lineage.run_params(spec, rows=rows, device=str(device), world_size=ctx.world_size)
        lineage.log_batched(
            client, run_id,
            metrics=lineage.history_metrics(fitted, metrics),
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("ctloop.weight_hash", digest), RunTag("ctloop.best_epoch", str(fitted.best_epoch)),
                  RunTag("ctloop.holdout_digest", frame_digest(parts.holdout))],
        )
        lineage.log_spec(client, run_id, spec)
        lineage.log_profile(client, run_id, parts.train, spec)
        # start_run checks the run against the process's active experiment, which other code in a
        # long-lived process (an engine, a sensor) may have set to another one.
        mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id):
            lineage.log_dataset(parts.train, spec, snapshot)
            lineage.log_model(model, parts.train[spec.data.feature_names].head(5), step=fitted.best_epoch)
    return TrainResult(
        run_id=run_id,
        model_uri=f"runs:/{run_id}/{lineage.MODEL_NAME}",
        metrics=metrics,
        weight_hash=digest,
        data_digest=snapshot.digest,
        epochs_run=fitted.epochs_run,
    )


def _tensors(encoder: Encoder, frame, spec: ModelSpec) -> Tensors:
    x_num, x_cat = encoder.features(frame)
    return Tensors(x_num, x_cat, encoder.targets(frame[spec.data.label]))

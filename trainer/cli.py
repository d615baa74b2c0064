"""`ctloop train` (one run by hand) and `ctloop validate` (check data against a model's schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

Data = Annotated[str, typer.Option("--data", help="Dataset URI: file://, a path, or s3:// (object or prefix).")]
Model = Annotated[str, typer.Option("--model", help="Model name; its spec is <home>/specs/NAME.json.")]
SpecFile = Annotated[Path | None, typer.Option("--spec", help="Model spec JSON to use instead of the saved one.")]


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("validate")(validate_command)


def _spec(model: str, spec_file: Path | None, settings):
    from ctloop.failures import Refused
    from ctloop.modelspec import load_spec, read_spec

    try:
        spec = read_spec(spec_file) if spec_file else load_spec(model, settings)
    except OSError as exc:
        raise Refused(f"spec for {model!r}: {exc}") from None
    if spec.name != model:
        raise Refused(f"spec {spec_file} is for model {spec.name!r}, not {model!r}")
    return spec


def _snapshot(data: str, s3_endpoint_url: str | None):
    """The data to use; none at all is a wrong --data, refused before anything runs."""
    from ctloop.failures import Refused
    from ctloop.snapshot import take_snapshot

    snapshot = take_snapshot(data, s3_endpoint_url=s3_endpoint_url)
    if not snapshot.objects:
        raise Refused(f"no .parquet or .csv objects under {data}", fix="check --data")
    return snapshot


def validate_command(data: Data, model: Model, spec: SpecFile = None) -> None:
    """Check a dataset against the model's declared schema, as the workflow's validate step does."""
    from ctloop.settings import Settings
    from ctloop.trainer.validation import validate

    settings = Settings()
    model_spec = _spec(model, spec, settings)
    snapshot = _snapshot(data, settings.s3_endpoint_url)
    report = validate(snapshot, model_spec.data, s3_endpoint_url=settings.s3_endpoint_url)
    typer.echo(report.model_dump_json(indent=2))


def train_command(
    data: Data,
    model: Model,
    spec: SpecFile = None,
    event_id: Annotated[str | None, typer.Option(help="Triggering event id, recorded on the run.")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Write (and resume from) per-epoch checkpoints.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda; default: CUDA when present.")] = None,
) -> None:
    """Validate a dataset and train one model on it; prints the run id, metrics and data digest."""
    from ctloop.mlflow_quiet import quiet_mlflow

    quiet_mlflow()  # before the trainer's imports: defining its pyfunc class already warns
    from ctloop.settings import Settings
    from ctloop.trainer.train import train
    from ctloop.trainer.validation import validate

    settings = Settings()
    model_spec = _spec(model, spec, settings)
    endpoint = settings.s3_endpoint_url
    snapshot = _snapshot(data, endpoint)
    validate(snapshot, model_spec.data, s3_endpoint_url=endpoint)
    result = train(snapshot, model_spec, tracking_uri=settings.tracking_uri, event_id=event_id,
                   checkpoint_dir=checkpoint_dir, s3_endpoint_url=endpoint, device=device)
    typer.echo(f"run id:      {result.run_id}")
    typer.echo(f"model:       {result.model_uri}")
    typer.echo(f"data digest: {result.data_digest}")
    typer.echo(f"trainer:     {model_spec.trainer or 'builtin'} ({result.trainer_version})")
    typer.echo(f"metrics:     {json.dumps(result.metrics, sort_keys=True)}")

"""`ctloop run retrain`, `ctloop runs list`, `ctloop runs show ID`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from ctloop.failures import Failure, Refused

run_app = typer.Typer(help="Start workflow runs.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs of the local engine, as its run store recorded them.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
    app.add_typer(runs_app, name="runs")


def _params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise Refused(f"--param expects NAME=VALUE, got {pair!r}")
        params[name] = value
    return params


@run_app.command("retrain")
def retrain(
    model: Annotated[str, typer.Option(help="Model name; its spec is <home>/specs/<model>.json.")],
    data: Annotated[str, typer.Option(help="Data URI (file://, s3:// or a path): one object or a prefix.")],
    engine: Annotated[str | None, typer.Option(help="local or argo; default: the settings' engine.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Id of the triggering event, recorded as provenance.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Training-parameter override NAME=VALUE, repeatable.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = True,
) -> None:
    """Retrain MODEL on DATA → evaluate against the champion → promote if the policy says so."""
    from ctloop.modelspec import SpecNotFound, load_spec
    from ctloop.settings import Settings
    from ctloop.snapshot import take_snapshot
    from ctloop.workflows.engine import AlreadyRan, RunRequest
    from ctloop.workflows.engine_factory import open_engine

    if engine not in (None, "local", "argo"):
        raise Refused(f"--engine must be local or argo, got {engine!r}")
    settings = Settings(**({"engine": engine} if engine else {}))
    params = _params(param or [])
    try:
        load_spec(model, settings)
    except SpecNotFound:
        if settings.engine == "local":
            raise
    # The digest makes a rerun on unchanged data a refused duplicate rather than a second training.
    snapshot = take_snapshot(data, s3_endpoint_url=settings.s3_endpoint_url)
    if not snapshot.objects:
        raise Refused(f"no .parquet or .csv objects under {data}", fix="check --data")
    request = RunRequest(model=model, data_uri=data, trigger_event_id=event_id, trigger="manual",
                         data_digest=snapshot.digest, params=params)
    try:
        handle = open_engine(settings).submit(request, wait=wait)
    except AlreadyRan as exc:
        raise Failure(f"{exc}; nothing to do", exit_code=3) from None
    typer.echo(json.dumps(handle.model_dump()))
    if handle.status in ("Failed", "Error"):
        raise typer.Exit(1)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@runs_app.command("list")
def list_runs(
    model: Annotated[str | None, typer.Option(help="Only this model's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
) -> None:
    """The most recent runs, newest first."""
    from ctloop.settings import Settings
    from ctloop.workflows.local.run_store import RunStore

    store = RunStore(Settings().state_db)
    for run in store.list(limit=limit, model=model):
        typer.echo(f"{run.id}\t{run.status}\t{run.model or '-'}\t{run.trigger or '-'}\t{_time(run.created_at)}"
                   f"\t{run.error or ''}")


@runs_app.command("show")
def show_run(run_id: Annotated[str, typer.Argument(help="Run id, as `runs list` prints it.")]) -> None:
    """One run with each step's status, attempts, timings, outputs and error, as JSON."""
    from dataclasses import asdict

    from ctloop.settings import Settings
    from ctloop.workflows.local.run_store import RunStore

    run = RunStore(Settings().state_db).get(run_id)
    typer.echo(json.dumps(asdict(run), indent=2))

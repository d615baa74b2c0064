"""The `ctloop` command. Each component adds its own commands through `ctloop.<component>.cli.register`;
known failures of every command end here, as one line and an exit code (`ctloop.failures`)."""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

from ctloop.failures import describe
from ctloop.mlflow_http import bound_mlflow_http


class _ReportingGroup(TyperGroup):
    """The root command: a known failure of any subcommand becomes one line on stderr and its exit code;
    anything else (a bug) keeps its traceback. Here rather than in `main`, so typer's CliRunner sees it too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            report = describe(exc)
            if report is None:
                raise
            typer.echo(report.line, err=True)
            raise typer.Exit(report.exit_code) from None


app = typer.Typer(
    name="ctloop",
    cls=_ReportingGroup,
    help="Event-driven continuous training: data and drift events -> retrain -> evaluate -> promote.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _bounded() -> None:
    # Commands fail in bounded time when the registry is down, rather than after MLflow's minutes of retries.
    bound_mlflow_http()


# Order is the order of `ctloop --help`; a package missing from an install is simply not offered.
_COMMAND_MODULES = (
    "ctloop.kafka_cli",
    "ctloop.trainer.cli",
    "ctloop.workflows.cli",
    "ctloop.sensors.cli",
    "ctloop.monitors.cli",
    "ctloop.monitors.outcomes_cli",
    "ctloop.deploy.cli",
    "ctloop.app.bake_cli",
    "ctloop.app.demo.cli",
)

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    app()

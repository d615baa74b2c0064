"""The `ctloop` command. Each component adds its own commands through `ctloop.<component>.cli.register`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="ctloop",
    help="Event-driven continuous training: data and drift events -> retrain -> evaluate -> promote.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Order is the order of `ctloop --help`; a package missing from an install is simply not offered.
_COMMAND_MODULES = (
    "ctloop.kafka_cli",
    "ctloop.trainer.cli",
    "ctloop.workflows.cli",
    "ctloop.sensors.cli",
    "ctloop.monitors.cli",
    "ctloop.deploy.cli",
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

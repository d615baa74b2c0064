"""The `ctloop` command. Each package adds its own commands through `<package>.cli.register`."""

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
    "trainer.cli",
    "workflows.cli",
    "sensors.cli",
    "monitors.cli",
    "deploy.cli",
    "ctloop.demo_cli",
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

"""`ctloop kafka up|down|status`: a local Kafka broker that outlives the command, found again by its state file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctloop.failures import Failure, Refused

if TYPE_CHECKING:
    from ctloop.kafka_local import BrokerState

kafka_app = typer.Typer(help="Run a local single-node Kafka broker (KRaft) on 127.0.0.1.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(kafka_app, name="kafka")


def _run_dir() -> Path:
    from ctloop.settings import Settings

    return (Settings().home / "kafka").resolve()


@kafka_app.command()
def up(
    port: Annotated[int | None, typer.Option(help="Broker port; default: the port of CTLOOP_KAFKA_BOOTSTRAP if free.")]
    = None,
) -> None:
    """Start the broker in the background (or report the one already running) and print its address."""
    from ctloop.kafka_local import KAFKA_VERSION, BrokerError, BrokerState, LocalKafka, broker_answers, docker_available

    run_dir = _run_dir()
    state_file = run_dir / "state.json"
    state = BrokerState.load(state_file)
    if state is not None and _is_our_broker(state) and broker_answers(state.bootstrap):
        if port not in (None, state.port):
            raise Refused(f"a broker is already running at {state.bootstrap}",
                          fix="`ctloop kafka down` first to change the port")
        typer.echo(f"Kafka already running at {state.bootstrap} (pid {state.pid})")
        _print_usage(state.bootstrap)
        return
    try:
        broker = LocalKafka(run_dir / "data", port or _default_port(run_dir / "data"))
        broker.start()
    except BrokerError as exc:
        if docker_available():
            raise Failure(str(exc), fix=f"with Docker instead: docker run -d -p 9092:9092 apache/kafka:{KAFKA_VERSION}"
                          ) from None
        raise
    broker.state().save(state_file)
    typer.echo(f"Kafka running at {broker.bootstrap} (pid {broker.pid}, data in {broker.data_dir})")
    _print_usage(broker.bootstrap)


@kafka_app.command()
def down() -> None:
    """Stop the broker cleanly (its data stays for the next `up`)."""
    from ctloop.kafka_local import BrokerState, LocalKafka

    state_file = _run_dir() / "state.json"
    state = BrokerState.load(state_file)
    if state is None or not _is_our_broker(state):
        state_file.unlink(missing_ok=True)
        typer.echo("no Kafka broker running")
        return
    LocalKafka.attach(state).stop()
    state_file.unlink(missing_ok=True)
    typer.echo(f"Kafka at {state.bootstrap} stopped")


@kafka_app.command()
def status() -> None:
    """Say whether the broker runs and where; exit 1 when it does not."""
    from ctloop.kafka_local import BrokerState, broker_answers

    state = BrokerState.load(_run_dir() / "state.json")
    if state is None or not _is_our_broker(state):
        typer.echo("Kafka not running")
        raise typer.Exit(1)
    if not broker_answers(state.bootstrap):
        typer.echo(f"Kafka process {state.pid} is up but does not answer at {state.bootstrap}")
        raise typer.Exit(1)
    typer.echo(f"Kafka running at {state.bootstrap} (pid {state.pid}, data in {state.data_dir})")


def _default_port(data_dir: Path) -> int | None:
    """The configured bootstrap's port while it is free, so the default settings reach the broker."""
    from ctloop.kafka_local import port_in_use, saved_ports
    from ctloop.settings import Settings

    if saved_ports(data_dir) is not None:
        return None  # a formatted data dir keeps its ports
    wanted = int(Settings().kafka_bootstrap.rsplit(":", 1)[-1])
    return None if port_in_use(wanted) else wanted


def _is_our_broker(state: BrokerState) -> bool:
    """The recorded pid is still the broker on that data dir (pids get reused after a reboot)."""
    from ctloop.kafka_local import pid_alive

    if not pid_alive(state.pid):
        return False
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the live pid
    return b"kafka.Kafka" in cmdline and any(state.data_dir.encode() in arg for arg in cmdline)


def _print_usage(bootstrap: str) -> None:
    typer.echo(f"bootstrap: {bootstrap}")
    typer.echo(f"use it:    export CTLOOP_BUS=kafka CTLOOP_KAFKA_BOOTSTRAP={bootstrap}")

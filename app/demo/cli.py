"""`ctloop demo`: the whole loop on this machine in about a minute (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctloop.failures import Failure, Refused

DEFAULT_HOME = Path(".ctloop") / "demo"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    home: Annotated[Path, typer.Option(help="Where the demo keeps its state (a directory of its own).")] = DEFAULT_HOME,
    kafka: Annotated[str | None, typer.Option(metavar="HOST:PORT",
                                              help="Use this Kafka broker instead of the embedded bus.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output; only the summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary, as JSON.")] = False,
    resume: Annotated[bool, typer.Option("--resume/--clean",
                                         help="Continue the demo in HOME, or start it again from nothing.")] = False,
) -> None:
    """Play the story: data arrives → retrain → promote or reject; drift → alert → rerun; promote and roll back
    by hand. Exits 1 when any of the story's checks fails."""
    import logging
    import warnings

    from rich.console import Console

    from ctloop.app.demo.narration import RichNarrator, Silent
    from ctloop.app.demo.runner import DemoOptions, run_demo
    from ctloop.app.demo.summary import render
    from ctloop.mlflow_quiet import quiet_mlflow

    if kafka is not None and (":" not in kafka or not kafka.rsplit(":", 1)[1].isdigit()):
        raise Refused(f"--kafka expects HOST:PORT, got {kafka!r}")
    # The components log for operators; the demo tells its own story instead, so it shows no warning at all.
    quiet_mlflow()
    warnings.showwarning = lambda *args, **kwargs: None

    logging.basicConfig(level=logging.ERROR)
    for noisy in ("mlflow", "alembic", "kafka", "ctloop", "deploy", "sensors", "monitors", "workflows", "trainer"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    console = Console(stderr=as_json, highlight=False)
    narrator = Silent() if quiet or as_json else RichNarrator(console)
    summary = run_demo(DemoOptions(home=home, kafka=kafka, resume=resume), narrator)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        console.rule("[bold]Summary")
        render(summary, console)
        console.print(f"finished in {summary.wall_s:.1f}s" + ("" if summary.ok else "; [red]the story was not kept"))
    if summary.error:
        raise Failure(summary.error)
    if not summary.ok:
        raise typer.Exit(1)

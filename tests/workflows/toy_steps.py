"""Trivial step functions for test-only templates that exercise the local engine's mechanics."""

# No `from __future__ import annotations`: Hera reads the annotations at build time.

import json
import time
from pathlib import Path
from typing import Annotated

from hera.workflows import Artifact, Parameter
from hera.workflows.io import Output


class Doubled(Output):
    doubled: Annotated[int, Parameter(name="doubled")]
    blob: Annotated[str, Artifact(name="blob")]


class Summary(Output):
    total: Annotated[int, Parameter(name="total")]


def double(value: Annotated[int, Parameter(name="value")], log: Annotated[str, Parameter(name="log")]) -> Doubled:
    _append(log, f"double {value}")
    return Doubled(doubled=2 * value, blob=json.dumps({"value": value}))


def add(doubled: Annotated[int, Parameter(name="doubled")], blob: Annotated[str, Artifact(name="blob", loader=None)],
        log: Annotated[str, Parameter(name="log")]) -> Summary:
    original = json.loads(Path(blob).read_text())["value"]
    _append(log, f"add {doubled} {original}")
    return Summary(total=doubled + original)


def flaky(failures: Annotated[int, Parameter(name="failures")], log: Annotated[str, Parameter(name="log")]) -> None:
    """Exits with the transient code (75) until it has been called `failures` times."""
    calls = _append(log, "flaky")
    if calls <= failures:
        raise SystemExit(75)


def fail(log: Annotated[str, Parameter(name="log")]) -> None:
    _append(log, "fail")
    raise RuntimeError("this step always fails")


def record_status(status: Annotated[str, Parameter(name="status")], log: Annotated[str, Parameter(name="log")]) -> None:
    _append(log, f"exit {status}")


def block(log: Annotated[str, Parameter(name="log")]) -> None:
    _append(log, "block")
    time.sleep(60)


def block_once(log: Annotated[str, Parameter(name="log")]) -> None:
    """Blocks for a minute the first time (to be killed there); returns at once when run again."""
    if _append(log, "block") == 1:
        time.sleep(60)


def enter(log: Annotated[str, Parameter(name="log")]) -> None:
    _append(log, "enter")


def nothing() -> None:
    """A step that does nothing: what the engine benchmark times."""


def _append(log: str, line: str) -> int:
    path = Path(log)
    with path.open("a") as f:
        f.write(line + "\n")
    return sum(1 for entry in path.read_text().splitlines() if entry == line)

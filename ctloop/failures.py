"""Known failures, and the one line a command reports for each.

A component marks an exception as a known failure by subclassing `Failure` (it tried and failed: exit 1),
`Unreachable` (a service did not answer: exit 1) or `Refused` (the command refused its input: a bad argument,
a bad or missing spec, no data where it points; nothing was done: exit 2). The `ctloop` root command turns
these, and the few foreign exceptions `describe` knows, into `error: <problem>; <fix>` on one line. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ctloop.mlflow_http import brief, no_answer

FAILED = 1
REFUSED = 2
REGISTRY_FIX = "is the MLflow server running there? Check CTLOOP_MLFLOW_TRACKING_URI (or --tracking-uri)"


class Failure(Exception):
    """A known failure; the message names the problem, `fix` (when the message does not) what to do."""

    exit_code: ClassVar[int] = FAILED
    fix: ClassVar[str | None] = None

    def __init__(self, message: str, *, fix: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        if fix is not None:
            self.fix = fix  # type: ignore[misc]  # an instance may name a more precise fix than its class
        if exit_code is not None:
            self.exit_code = exit_code  # type: ignore[misc]


class Refused(Failure):
    """The input cannot be used (bad argument, bad or missing spec, no data there); nothing was done."""

    exit_code = REFUSED


class Unreachable(Failure):
    """A service the command needs (broker, registry, engine) did not answer."""


@dataclass(frozen=True)
class Report:
    line: str
    exit_code: int


def describe(exc: BaseException) -> Report | None:
    """The one-line report of a known failure, or None for anything else (a bug)."""
    if isinstance(exc, Failure):
        return Report(_line(str(exc), exc.fix), exc.exit_code)
    kind = type(exc)
    if kind.__name__ == "ValidationError" and kind.__module__.startswith("pydantic"):
        return _invalid(exc)
    if kind.__module__ == "mlflow.exceptions" and no_answer(exc):
        # Raised by code that talks to MLflow directly (training logs its run there).
        where = re.search(r"API request to (\S+?)/api/", str(exc))
        server = where.group(1) if where else "the tracking server"
        return Report(_line(f"registry {server} unavailable: {brief(exc)}", REGISTRY_FIX), FAILED)
    if kind.__module__ == "kafka.errors":
        # kafka-python raises these when a broker that answered at connect goes away mid-command.
        return Report(_line(f"Kafka: {kind.__name__}: {exc}",
                            "check the broker (`ctloop kafka status`) and CTLOOP_KAFKA_BOOTSTRAP"), FAILED)
    return None


def _invalid(exc: BaseException) -> Report:
    errors = exc.errors()  # type: ignore[attr-defined]
    title = getattr(exc, "title", "input")
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or title}: {e['msg']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    if title == "Settings":
        return Report(_line(f"invalid settings: {problems}{more}",
                            "fix the CTLOOP_* environment variable or ctloop.toml entry named"), REFUSED)
    return Report(_line(f"invalid {title}: {problems}{more}", None), REFUSED)


def _line(message: str, fix: str | None) -> str:
    text = "; ".join(part.strip() for part in message.strip().splitlines() if part.strip()) or "failed"
    if fix and fix not in text:
        text = f"{text}; {fix}"
    return f"error: {text}"

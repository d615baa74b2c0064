"""Crash points by name: a test arms one and the process SIGKILLs itself there, right after a durable change.

`CTLOOP_CRASH_AT` is read once, when this module is imported: a comma-separated list of point names, each
optionally `name@n` to crash on the n-th pass only (default: the first). Unarmed, `crash_point` is a
function that returns at once. Points so far (`POINTS`): the sensor's `decision-recorded` (a batch's
decisions written), `offset-committed` (offsets committed after the fsync) and `dead-letter-published`
(a dead letter acknowledged, not yet marked sent); the local engine's `run-key-claimed` (a run row holds
the key) and `step-output-written` (a step's outputs recorded).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "CTLOOP_CRASH_AT"
POINTS = ("decision-recorded", "offset-committed", "dead-letter-published", "run-key-claimed",
          "step-output-written")


class CrashPointError(ValueError):
    """`CTLOOP_CRASH_AT` names a point that does not exist or a pass that is not a positive number."""


def parse(spec: str) -> dict[str, int]:
    """`"a,b@3"` -> {"a": 1, "b": 3}; unknown names are an error naming the known ones."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition("@")
        if name not in POINTS:
            raise CrashPointError(f"{ENV}: unknown crash point {name!r}; known: {', '.join(POINTS)}")
        if nth and (not nth.isdigit() or int(nth) < 1):
            raise CrashPointError(f"{ENV}: pass {nth!r} of {name} must be a positive number")
        armed[name] = int(nth or 1)
    return armed


_ARMED = parse(os.environ.get(ENV, ""))
_passes: Counter[str] = Counter()


def _disarmed(name: str) -> None:
    return None


def _armed(name: str) -> None:
    nth = _ARMED.get(name)
    if nth is None:
        return
    _passes[name] += 1
    if _passes[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)


crash_point = _armed if _ARMED else _disarmed
crash_point.__doc__ = "SIGKILL this process here when `CTLOOP_CRASH_AT` arms `name` (read once at import)."

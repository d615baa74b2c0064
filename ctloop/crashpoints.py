"""Crash points by name: a test arms one and the process SIGKILLs itself there, right after a durable change.

`CTLOOP_CRASH_AT` is read once, when this module is imported: a comma-separated list of point names, each
optionally `name@n` to crash on the n-th pass only (default: the first). Unarmed, `crash_point` is a
function that returns at once. A name is a kind of change, so one name can sit in several components;
each process arms its own. The points (`POINTS`):

- sensor: `decision-recorded` (a batch's decisions written), `offset-committed` (offsets committed
  after the fsync), `dead-letter-published` (a dead letter acknowledged, not yet marked sent);
- local engine: `run-key-claimed` (a run row holds the key), `step-output-written` (a step's outputs
  recorded, not yet memoized);
- promoter (`ctloop.deploy`): `model-registered` (a version created, `challenger` not yet on it),
  `alias-moved` (each alias write: `challenger` at registration, then each of a move's aliases),
  `audit-written` (an audit entry written: a move's commit point, a rejection, a recovery),
  `outbox-recorded` (a committed move's event kept in the outbox, its intent not yet dropped),
  `event-published` (an outbox event acknowledged by the bus, not yet marked), `outbox-marked` (its
  outbox record deleted);
- drift monitor: `report-written` (a drifting window's report and rows stored, its event not yet
  built), `event-published` (its drift event flushed), `alert-state-written` (the alert ledger saved),
  `dead-letter-published` (a bad batch dead-lettered), `offset-committed` (a window's offsets
  committed).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "CTLOOP_CRASH_AT"
POINTS = ("decision-recorded", "offset-committed", "dead-letter-published", "run-key-claimed",
          "step-output-written", "model-registered", "alias-moved", "audit-written", "outbox-recorded",
          "event-published", "outbox-marked", "report-written", "alert-state-written")


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

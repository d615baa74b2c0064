"""Durable record of local workflow runs (SQLite): who ran what, each step's status, outputs and errors.

The idempotency key is claimed atomically: inside one `BEGIN IMMEDIATE` transaction a key is
checked and the run inserted, so two processes submitting the same key cannot both start it.

Claims and a run's final status are fsync'd (synchronous=FULL). Per-step records go through a
second connection with synchronous=NORMAL: in WAL mode they survive a killed process (what crash
recovery needs), skip the fsync that would otherwise cost ~5 ms per write, and are made durable
by the run's next FULL commit, which syncs the shared log.

One store may serve several threads (runs submitted without waiting): a lock keeps each method's
statements, and so each transaction, whole.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ctloop.sqlite import connect
from ctloop.workflows.engine import AlreadyRan, RunNotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wf_runs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    template TEXT NOT NULL,
    model TEXT,
    trigger TEXT,
    trigger_event_id TEXT,
    status TEXT NOT NULL,
    parameters TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS wf_runs_key ON wf_runs (idempotency_key, status);
CREATE TABLE IF NOT EXISTS wf_steps (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    outputs TEXT NOT NULL DEFAULT '{}',
    artifacts TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    PRIMARY KEY (run_id, name)
);
"""

# A run in one of these holds its idempotency key: a second submit of the key is refused.
_HOLDING = ("Pending", "Running", "Succeeded")


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    status: str
    attempts: int
    cached: bool
    started_at: float | None
    finished_at: float | None
    outputs: dict[str, str]
    artifacts: dict[str, str]
    error: str | None


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    idempotency_key: str
    template: str
    model: str | None
    trigger: str | None
    trigger_event_id: str | None
    status: str
    parameters: dict[str, str]
    created_at: float
    finished_at: float | None
    error: str | None
    steps: tuple[StepRecord, ...] = field(default=())

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)


T = TypeVar("T")


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: RunStore, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class RunStore:
    def __init__(self, path: Path | str) -> None:
        self._lock = threading.RLock()
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._steps = connect(path)
        self._steps.execute("PRAGMA synchronous=NORMAL")

    @_locked
    def claim(self, run_id: str, key: str, *, template: str, parameters: dict[str, str], model: str | None,
              trigger: str | None, trigger_event_id: str | None) -> None:
        """Record a new Running run, or raise AlreadyRan if a run holds `key` (running, or succeeded)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            holder = self._db.execute(
                f"SELECT id FROM wf_runs WHERE idempotency_key = ? AND status IN ({','.join('?' * len(_HOLDING))})"
                " ORDER BY created_at LIMIT 1",
                (key, *_HOLDING),
            ).fetchone()
            if holder is not None:
                raise AlreadyRan(key, holder[0])
            self._db.execute(
                "INSERT INTO wf_runs (id, idempotency_key, template, model, trigger, trigger_event_id, status,"
                " parameters, created_at) VALUES (?, ?, ?, ?, ?, ?, 'Running', ?, ?)",
                (run_id, key, template, model, trigger, trigger_event_id, json.dumps(parameters), time.time()),
            )

    @_locked
    def step_started(self, run_id: str, name: str, attempt: int) -> None:
        self._steps.execute(
            "INSERT INTO wf_steps (run_id, name, status, attempts, started_at) VALUES (?, ?, 'Running', ?, ?)"
            " ON CONFLICT (run_id, name) DO UPDATE SET status = 'Running', attempts = excluded.attempts,"
            " error = NULL",
            (run_id, name, attempt, time.time()),
        )

    @_locked
    def step_finished(self, run_id: str, name: str, status: str, *, outputs: dict[str, str] | None = None,
                      artifacts: dict[str, str] | None = None, error: str | None = None, cached: bool = False,
                      attempts: int | None = None) -> None:
        now = time.time()
        self._steps.execute(
            "INSERT INTO wf_steps (run_id, name, status, attempts, cached, started_at, finished_at, outputs, artifacts,"
            " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET"
            " status = excluded.status, cached = excluded.cached, finished_at = excluded.finished_at,"
            " outputs = excluded.outputs, artifacts = excluded.artifacts, error = excluded.error,"
            " attempts = COALESCE(?, wf_steps.attempts)",
            (run_id, name, status, attempts or 0, int(cached), now, now, json.dumps(outputs or {}),
             json.dumps(artifacts or {}), error, attempts),
        )

    @_locked
    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        self._db.execute(
            "UPDATE wf_runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
            (status, error, time.time(), run_id),
        )

    @_locked
    def fail_if_running(self, run_id: str, error: str) -> bool:
        """Mark an abandoned run (and its running steps) failed; False if someone already finished it."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            changed = self._db.execute(
                "UPDATE wf_runs SET status = 'Failed', error = ?, finished_at = ? WHERE id = ? AND status = 'Running'",
                (error, time.time(), run_id),
            ).rowcount
            self._db.execute(
                "UPDATE wf_steps SET status = 'Failed', error = ?, finished_at = ? WHERE run_id = ?"
                " AND status = 'Running'",
                (error, time.time(), run_id),
            )
        return changed == 1

    @_locked
    def running(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM wf_runs WHERE status IN ('Pending', 'Running')")]

    @_locked
    def get(self, run_id: str) -> RunRecord:
        row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM wf_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        steps = self._db.execute(
            "SELECT name, status, attempts, cached, started_at, finished_at, outputs, artifacts, error FROM wf_steps"
            " WHERE run_id = ? ORDER BY COALESCE(started_at, finished_at), rowid",
            (run_id,),
        ).fetchall()
        return _run(row, tuple(StepRecord(s[0], s[1], s[2], bool(s[3]), s[4], s[5], json.loads(s[6]),
                                          json.loads(s[7]), s[8]) for s in steps))

    @_locked
    def list(self, limit: int = 50, model: str | None = None) -> list[RunRecord]:
        query = f"SELECT {_RUN_COLUMNS} FROM wf_runs"
        args: tuple[Any, ...] = ()
        if model is not None:
            query += " WHERE model = ?"
            args = (model,)
        rows = self._db.execute(query + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_run(row, ()) for row in rows]

    @_locked
    def close(self) -> None:
        self._db.close()
        self._steps.close()


_RUN_COLUMNS = ("id, idempotency_key, template, model, trigger, trigger_event_id, status, parameters, created_at,"
                " finished_at, error")


def _run(row: tuple[Any, ...], steps: tuple[StepRecord, ...]) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), row[8], row[9],
                     row[10], steps)

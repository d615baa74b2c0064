"""A small real engine for sensor tests: a durable run store that refuses a key it holds, and runs that
take no time (or stay Running until completed), so tests count runs at the engine boundary.

Nothing in the schema enforces uniqueness: the engine refuses a held key by looking it up inside one
write transaction, as a real engine must, and every submission is first appended to `attempts` (which
process, which key, accepted or not). So a duplicate run, or a sensor that submits a key twice, shows up
in the counts (`duplicate_runs`, `attempts`) instead of being absorbed by a constraint."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ctloop.sqlite import connect
from ctloop.workflows.arguments import run_key
from ctloop.workflows.engine import AlreadyRan, RunHandle, RunRequest, RunStatus


class LedgerEngine:
    def __init__(self, path: Path | str, *, instant: bool = True) -> None:
        self.instant = instant
        self._db = connect(path)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT, key TEXT, model TEXT, event_id TEXT,"
            " digest TEXT, data_uri TEXT, trigger TEXT, status TEXT);"
            "CREATE TABLE IF NOT EXISTS attempts (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, event_id TEXT,"
            " pid INTEGER, accepted INTEGER)"
        )

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        key = run_key(request)
        run_id = f"run-{secrets.token_hex(4)}"
        status: RunStatus = "Succeeded" if self.instant else "Running"
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the lookup and the insert as one step across processes
            holder = self._db.execute("SELECT run_id FROM runs WHERE key = ?", (key,)).fetchone()
            self._db.execute("INSERT INTO attempts (key, event_id, pid, accepted) VALUES (?, ?, ?, ?)",
                             (key, request.trigger_event_id, os.getpid(), holder is None))
            if holder is None:
                self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (run_id, key, request.model, request.trigger_event_id, request.data_digest,
                                  request.data_uri, request.trigger, status))
        if holder is not None:
            raise AlreadyRan(key, holder[0])
        return RunHandle(run_id=run_id, idempotency_key=key, status=status)

    def status(self, run_id: str) -> RunStatus:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise LookupError(run_id)
        return row[0]

    def complete(self, run_id: str, status: RunStatus = "Succeeded") -> None:
        with self._db:
            self._db.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))

    def runs(self) -> list[dict[str, str]]:
        cursor = self._db.execute("SELECT run_id, key, model, event_id, digest, data_uri, trigger, status FROM runs")
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def refused(self) -> int:
        """Submissions refused because the key had run."""
        return int(self._db.execute("SELECT COUNT(*) FROM attempts WHERE NOT accepted").fetchone()[0])

    def attempts(self) -> list[dict[str, object]]:
        """Every submission in order: key, event id, the submitting process, whether it started a run."""
        rows = self._db.execute("SELECT key, event_id, pid, accepted FROM attempts ORDER BY seq").fetchall()
        return [{"key": k, "event_id": e, "pid": p, "accepted": bool(a)} for k, e, p, a in rows]

    def duplicate_runs(self) -> dict[str, int]:
        """Keys with more than one run, and how many."""
        rows = self._db.execute("SELECT key, COUNT(*) FROM runs GROUP BY key HAVING COUNT(*) > 1").fetchall()
        return dict(rows)

    def close(self) -> None:
        self._db.close()

"""A small real engine for sensor tests: a durable run store that refuses a key it holds, and runs that
take no time (or stay Running until completed), so tests count runs at the engine boundary."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from ctloop.sqlite import connect
from ctloop.workflows.arguments import run_key
from ctloop.workflows.engine import AlreadyRan, RunHandle, RunRequest, RunStatus


class LedgerEngine:
    def __init__(self, path: Path | str, *, instant: bool = True) -> None:
        self.instant = instant
        self._db = connect(path)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, key TEXT UNIQUE, model TEXT, event_id TEXT,"
            " digest TEXT, data_uri TEXT, trigger TEXT, status TEXT);"
            "CREATE TABLE IF NOT EXISTS refused (key TEXT)"
        )

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        key = run_key(request)
        run_id = f"run-{secrets.token_hex(4)}"
        status: RunStatus = "Succeeded" if self.instant else "Running"
        try:
            with self._db:
                self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (run_id, key, request.model, request.trigger_event_id, request.data_digest,
                                  request.data_uri, request.trigger, status))
        except sqlite3.IntegrityError:
            with self._db:
                self._db.execute("INSERT INTO refused VALUES (?)", (key,))
            holder = self._db.execute("SELECT run_id FROM runs WHERE key = ?", (key,)).fetchone()
            raise AlreadyRan(key, holder[0]) from None
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
        return int(self._db.execute("SELECT COUNT(*) FROM refused").fetchone()[0])

    def close(self) -> None:
        self._db.close()

"""The sensor's durable record: events seen, every admission decision, keys that ran, and admission state.

Kept in SQLite (`settings.state_db`), written in one transaction per consumed batch (each table with
one multi-row statement), before offsets are committed. Keyed by event id, it makes redelivery after a crash a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ctloop.sensors.admission import AdmissionState, Decision
from ctloop.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sensor_events (
    sensor TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL, digest TEXT,
    PRIMARY KEY (sensor, event_id)
);
CREATE TABLE IF NOT EXISTS sensor_decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor TEXT NOT NULL, at REAL NOT NULL, event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL,
    reason TEXT NOT NULL, key TEXT, run_id TEXT, latency_ms REAL
);
CREATE INDEX IF NOT EXISTS sensor_decisions_event ON sensor_decisions (event_id);
CREATE TABLE IF NOT EXISTS sensor_runs (
    key TEXT PRIMARY KEY, sensor TEXT NOT NULL, model TEXT NOT NULL, event_id TEXT NOT NULL, run_id TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sensor_state (sensor TEXT PRIMARY KEY, state TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DecisionRow:
    seq: int
    sensor: str
    at: float
    event_id: str
    model: str | None
    kind: str
    reason: str
    key: str | None
    run_id: str | None
    latency_ms: float | None


class DecisionLog:
    """One sensor group's record in a shared SQLite file."""

    def __init__(self, path: Path | str, sensor: str) -> None:
        self.sensor = sensor
        self._db = connect(path)
        self._db.executescript(_SCHEMA)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """One atomic write. `durable=False` skips the fsync: the write survives a killed process but
        may be lost with the machine; use it only for what a restart can reconstruct."""
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def seen(self, event_id: str) -> bool:
        return event_id in self.seen_digests([event_id])

    def seen_digests(self, event_ids: Collection[str]) -> dict[str, str]:
        """The content digest each of these events had when first seen ("" if not recorded); the events
        never seen are absent. One query for a whole batch."""
        rows = self._db.execute(
            "SELECT event_id, digest FROM sensor_events"
            " WHERE sensor = ? AND event_id IN (SELECT value FROM json_each(?))",
            (self.sensor, json.dumps(list(event_ids))))
        return {event_id: digest or "" for event_id, digest in rows}

    def mark_seen(self, digests: Mapping[str, str], *, at: float) -> None:
        """Events now decided, by id, with their content digests."""
        self._db.executemany("INSERT OR IGNORE INTO sensor_events (sensor, event_id, at, digest) VALUES (?, ?, ?, ?)",
                             [(self.sensor, event_id, at, digest) for event_id, digest in digests.items()])

    def ran(self, keys: Collection[str]) -> set[str]:
        """Which of these keys ever triggered a run."""
        rows = self._db.execute("SELECT key FROM sensor_runs WHERE key IN (SELECT value FROM json_each(?))",
                                (json.dumps(list(keys)),))
        return {key for (key,) in rows}

    def record(self, records: Iterable[tuple[Decision, float | None]], *, at: float) -> None:
        """Decisions, each with its event-to-trigger latency in ms when it started a run."""
        decisions, runs = [], []
        for decision, latency_ms in records:
            c = decision.candidate
            decisions.append((self.sensor, at, c.event_id, c.model, decision.kind, decision.reason, c.key,
                              decision.run_id, latency_ms))
            if decision.run_id is not None:
                runs.append((c.key, self.sensor, c.model, c.event_id, decision.run_id, at))
        self._db.executemany(
            "INSERT INTO sensor_decisions (sensor, at, event_id, model, kind, reason, key, run_id, latency_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", decisions)
        self._db.executemany("INSERT OR IGNORE INTO sensor_runs VALUES (?, ?, ?, ?, ?, ?)", runs)

    def record_rejections(self, rejections: Iterable[tuple[str, str | None, str]], *, at: float) -> None:
        """Events no sensor admitted (filtered out), as (event id, model, reason); recorded so that
        `ctloop events list` explains them."""
        self._db.executemany(
            "INSERT INTO sensor_decisions (sensor, at, event_id, model, kind, reason) VALUES (?, ?, ?, ?, ?, ?)",
            [(self.sensor, at, event_id, model, "rejected", reason) for event_id, model, reason in rejections])

    def load_state(self) -> AdmissionState:
        row = self._db.execute("SELECT state FROM sensor_state WHERE sensor = ?", (self.sensor,)).fetchone()
        return AdmissionState.model_validate_json(row[0]) if row else AdmissionState()

    def save_state(self, state: AdmissionState) -> None:
        self._db.execute("INSERT INTO sensor_state VALUES (?, ?)"
                         " ON CONFLICT (sensor) DO UPDATE SET state = excluded.state",
                         (self.sensor, state.model_dump_json()))

    def close(self) -> None:
        self._db.close()


def list_decisions(path: Path | str, *, model: str | None = None, event_id: str | None = None,
                   event_prefix: str | None = None, limit: int = 50) -> list[DecisionRow]:
    """The newest decisions first, optionally for one model, one event, or events whose id starts so."""
    if not Path(path).is_file():
        return []
    db = connect(path)
    try:
        db.executescript(_SCHEMA)
        where, args = [], []
        if model:
            where.append("model = ?")
            args.append(model)
        if event_id:
            where.append("event_id = ?")
            args.append(event_id)
        if event_prefix:
            where.append("substr(event_id, 1, ?) = ?")
            args.extend((len(event_prefix), event_prefix))
        sql = "SELECT seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms FROM sensor_decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        db.close()
    return [DecisionRow(*row) for row in rows]

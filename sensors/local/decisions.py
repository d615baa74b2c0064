"""The sensor's durable record: events seen, every admission decision, keys that ran, and admission state.

Kept in SQLite (`settings.state_db`), written in one transaction per consumed batch (each table with
one multi-row statement), before offsets are committed. Keyed by event id, it makes redelivery after a crash a no-op.

An event queued and replaced by a newer one in the same batch (a burst: `deferred`, then `coalesced`) is
stored as one row, its `coalesced` decision carrying the `deferred` reason in a column of its own; readers
(`list_decisions`, `DecisionLog.decisions`) give both decisions back, in order, as two `DecisionRow`s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    reason TEXT NOT NULL, key TEXT, run_id TEXT, latency_ms REAL, deferred TEXT
);
CREATE INDEX IF NOT EXISTS sensor_decisions_event ON sensor_decisions (event_id);
CREATE TABLE IF NOT EXISTS sensor_runs (
    key TEXT PRIMARY KEY, sensor TEXT NOT NULL, model TEXT NOT NULL, event_id TEXT NOT NULL, run_id TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sensor_state (sensor TEXT PRIMARY KEY, state TEXT NOT NULL);
"""
_COLUMNS = "seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred"


def _open(path: Path | str) -> sqlite3.Connection:
    db = connect(path)
    db.executescript(_SCHEMA)
    columns = {name for _, name, *_ in db.execute("PRAGMA table_info(sensor_decisions)")}
    if "deferred" not in columns:  # a log written before bursts were stored one row per event
        db.execute("ALTER TABLE sensor_decisions ADD COLUMN deferred TEXT")
    return db


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


def _rows(row: tuple) -> list[DecisionRow]:
    """The decisions one stored row holds, oldest first: a burst's row holds its `deferred` one too."""
    *fields, deferred = row
    decided = DecisionRow(*fields)
    if deferred is None:
        return [decided]
    return [replace(decided, kind="deferred", reason=deferred), decided]


class DecisionLog:
    """One sensor group's record in a shared SQLite file."""

    def __init__(self, path: Path | str, sensor: str) -> None:
        self.sensor = sensor
        self._db = _open(path)
        # A batch dirties index pages all over (event ids are random): keep them in memory, and checkpoint
        # the WAL less often, so a page rewritten batch after batch is copied back once.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.execute("PRAGMA wal_autocheckpoint=16384")

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
        """Decisions, each with its event-to-trigger latency in ms when it started a run. A candidate both
        deferred and coalesced among them takes one row (see the module's note)."""
        decisions: list[list] = []
        runs = []
        deferred: dict[int, int] = {}  # id of a deferred candidate -> its row
        for decision, latency_ms in records:
            c = decision.candidate
            # Merged only when `coalesced` directly follows the candidate's `deferred`: its order kept.
            row = deferred.pop(id(c), None)
            if decision.kind == "coalesced" and row is not None and decisions[row][9] is c:
                merged = decisions[row]
                merged[10], merged[4], merged[5] = merged[5], "coalesced", decision.reason
                continue
            if decision.kind == "deferred":
                deferred[id(c)] = len(decisions)
            decisions.append([self.sensor, at, c.event_id, c.model, decision.kind, decision.reason, c.key,
                              decision.run_id, latency_ms, c, None])
            if decision.run_id is not None:
                runs.append((c.key, self.sensor, c.model, c.event_id, decision.run_id, at))
        self._db.executemany(
            "INSERT INTO sensor_decisions (sensor, at, event_id, model, kind, reason, key, run_id, latency_ms,"
            " deferred) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*row[:9], row[10]) for row in decisions])
        self._db.executemany("INSERT OR IGNORE INTO sensor_runs VALUES (?, ?, ?, ?, ?, ?)", runs)

    def decisions(self) -> Iterator[DecisionRow]:
        """This log's decisions, oldest first, a burst's row given back as its two decisions."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM sensor_decisions WHERE sensor = ? ORDER BY seq",
                                (self.sensor,))
        for row in rows:
            yield from _rows(row)

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
    db = _open(path)
    try:
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
        sql = f"SELECT {_COLUMNS} FROM sensor_decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        db.close()
    return [decided for row in rows for decided in reversed(_rows(row))][:limit]

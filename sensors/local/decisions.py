"""The sensor's durable record: events seen, every admission decision, keys that ran, and admission state.

Kept in SQLite (`settings.state_db`), written in one transaction per consumed batch (each table with
one statement), before offsets are committed. Keyed by event id, it makes redelivery after a crash a no-op.

A burst costs one row, not one per event: events queued and replaced by newer ones in the same batch
(`deferred`, then `coalesced`) are stored, per model, as one row listing them (`burst`: a JSON array of
[event id, key, deferred reason, coalesced reason]); a lone such event as one row with the `deferred` reason
in a column of its own. Readers (`list_decisions`, `DecisionLog.decisions`) give back every decision, in
order, one `DecisionRow` each; so does the `sensor_decisions` view, a row per event, for SQL readers.
Each seen event names the burst row that holds it, so looking up one event stays an index lookup.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ctloop.sensors.admission import AdmissionState, Decision
from ctloop.sqlite import connect

# Hot tables keyed by random text (event ids, keys) are WITHOUT ROWID: one b-tree to insert into, not a table
# and an index.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sensor_events (
    event_id TEXT NOT NULL, sensor TEXT NOT NULL, at REAL NOT NULL, digest TEXT, burst INTEGER,
    PRIMARY KEY (event_id, sensor)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_decision_rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor TEXT NOT NULL, at REAL NOT NULL, event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL,
    reason TEXT NOT NULL, key TEXT, run_id TEXT, latency_ms REAL, deferred TEXT, burst TEXT
);
CREATE INDEX IF NOT EXISTS sensor_decisions_event ON sensor_decision_rows (event_id);
CREATE VIEW IF NOT EXISTS sensor_decisions AS
    SELECT seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred
    FROM sensor_decision_rows WHERE burst IS NULL
    UNION ALL
    SELECT r.seq, r.sensor, r.at, m.value ->> 0, r.model, 'coalesced', m.value ->> 3, m.value ->> 1, NULL, NULL,
           m.value ->> 2
    FROM sensor_decision_rows r, json_each(r.burst) m WHERE r.burst IS NOT NULL;
CREATE TABLE IF NOT EXISTS sensor_runs (
    key TEXT PRIMARY KEY, sensor TEXT NOT NULL, model TEXT NOT NULL, event_id TEXT NOT NULL, run_id TEXT,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_state (sensor TEXT PRIMARY KEY, state TEXT NOT NULL);
"""
_COLUMNS = "seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred, burst"
_INSERT = ("INSERT INTO sensor_decision_rows (seq, sensor, at, event_id, model, kind, reason, key, run_id,"
           " latency_ms, deferred, burst) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _open(path: Path | str) -> sqlite3.Connection:
    db = connect(path)
    if not _current(db):
        db.execute("BEGIN IMMEDIATE")  # two processes opening an older log migrate it once
        try:
            _migrate(db)
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    db.execute(statement)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return db


def _current(db: sqlite3.Connection) -> bool:
    """Whether the file already has this module's schema (then opening it writes nothing)."""
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'sensor_%'"))
    if kinds.get("sensor_decisions") != "view" or not {"sensor_events", "sensor_runs", "sensor_state"} <= kinds.keys():
        return False
    return "burst" in {name for _, name, *_ in db.execute("PRAGMA table_info(sensor_events)")}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a log written by an older sensor to this shape: decisions a table under another name (with the
    `deferred` and `burst` columns), seen events with the `burst` column."""
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name IN ('sensor_decisions', 'sensor_events')"))
    if kinds.get("sensor_decisions") == "table":
        db.execute("ALTER TABLE sensor_decisions RENAME TO sensor_decision_rows")
        columns = {name for _, name, *_ in db.execute("PRAGMA table_info(sensor_decision_rows)")}
        for column in ("deferred", "burst"):
            if column not in columns:
                db.execute(f"ALTER TABLE sensor_decision_rows ADD COLUMN {column} TEXT")
    if kinds.get("sensor_events") == "table":
        columns = {name for _, name, *_ in db.execute("PRAGMA table_info(sensor_events)")}
        if "burst" not in columns:
            db.execute("ALTER TABLE sensor_events ADD COLUMN burst INTEGER")


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
    """The decisions one stored row holds, oldest first: a coalesced event's row holds its `deferred` one
    too, a burst's row both of each of its events."""
    seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred, burst = row
    if burst is not None:
        out = []
        for member, member_key, deferred_reason, coalesced_reason in json.loads(burst):
            out.append(DecisionRow(seq, sensor, at, member, model, "deferred", deferred_reason, member_key, None, None))
            out.append(DecisionRow(seq, sensor, at, member, model, "coalesced", coalesced_reason, member_key, None,
                                   None))
        return out
    decided = DecisionRow(seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms)
    if deferred is None:
        return [decided]
    return [DecisionRow(seq, sensor, at, event_id, model, "deferred", deferred, key, run_id, latency_ms), decided]


def _json(value: Any) -> str:
    """JSON text for SQLite's json functions; json's escapes where orjson refuses a string (lone surrogates)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


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

    def mark_seen(self, digests: Mapping[str, str], *, at: float, bursts: Mapping[str, int] | None = None) -> None:
        """Events now decided, by id, with their content digests and, for those stored in a burst row, its
        `seq` (what `record` returned). One prepared statement for the whole batch."""
        burst = (bursts or {}).get
        self._db.executemany(
            "INSERT OR IGNORE INTO sensor_events (sensor, event_id, at, digest, burst) VALUES (?, ?, ?, ?, ?)",
            [(self.sensor, event_id, at, digest, burst(event_id)) for event_id, digest in digests.items()])

    def ran(self, keys: Collection[str]) -> set[str]:
        """Which of these keys ever triggered a run."""
        rows = self._db.execute("SELECT key FROM sensor_runs WHERE key IN (SELECT value FROM json_each(?))",
                                (json.dumps(list(keys)),))
        return {key for (key,) in rows}

    def record(self, records: Iterable[tuple[Decision, float | None]], *, at: float) -> dict[str, int]:
        """Decisions, each with its event-to-trigger latency in ms when it started a run. A candidate both
        deferred and coalesced among them takes one row, a model's burst of them one row in all (see the
        module's note); returns the burst row (`seq`) of each event stored in one. Inside `transaction` only."""
        rows: list[list] = []
        runs = []
        deferred: dict[int, int] = {}  # id of a deferred candidate -> its row
        merged: dict[str, list[int]] = {}  # model -> its rows merging a deferred and a coalesced decision
        for decision, latency_ms in records:
            c = decision.candidate
            # Merged only when `coalesced` directly follows the candidate's `deferred`: its order kept.
            row = deferred.pop(id(c), None)
            if decision.kind == "coalesced" and row is not None and rows[row][11] is c:
                merging = rows[row]
                merging[9], merging[4], merging[5] = merging[5], "coalesced", decision.reason
                merged.setdefault(c.model, []).append(row)
                continue
            if decision.kind == "deferred":
                deferred[id(c)] = len(rows)
            rows.append([self.sensor, at, c.event_id, c.model, decision.kind, decision.reason, c.key,
                         decision.run_id, latency_ms, None, None, c])
            if decision.run_id is not None:
                runs.append((c.key, self.sensor, c.model, c.event_id, decision.run_id, at))
        for model, members in merged.items():
            if len(members) < 2:
                continue
            head = rows[members[0]]
            burst = [[rows[m][2], rows[m][6], rows[m][9], rows[m][5]] for m in members]
            for m in members[1:]:
                rows[m] = None
            rows[members[0]] = [self.sensor, at, head[2], model, "coalesced", f"{len(burst)} events coalesced",
                                None, None, None, None, _json(burst), burst]
        return self._insert(rows, runs)

    def _insert(self, rows: list[list | None], runs: list[tuple]) -> dict[str, int]:
        """The rows in order, in one statement. Each is given its `seq` here, the next ones after the largest
        ever used (this runs inside `transaction`, which holds the write lock), so a burst's is known."""
        (last,) = self._db.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'sensor_decision_rows'), 0),"
            " coalesce((SELECT max(seq) FROM sensor_decision_rows), 0))").fetchone()
        bursts: dict[str, int] = {}
        numbered = []
        for row in rows:
            if row is None:
                continue
            last += 1
            if row[10] is not None:
                for member in row[11]:
                    bursts[member[0]] = last
            numbered.append((last, *row[:11]))
        self._db.executemany(_INSERT, numbered)
        if runs:
            self._db.executemany("INSERT OR IGNORE INTO sensor_runs VALUES (?, ?, ?, ?, ?, ?)", runs)
        return bursts

    def decisions(self) -> Iterator[DecisionRow]:
        """This log's decisions, oldest first, a stored row given back as every decision it holds."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM sensor_decision_rows WHERE sensor = ? ORDER BY seq",
                                (self.sensor,))
        for row in rows:
            yield from _rows(row)

    def record_rejections(self, rejections: Iterable[tuple[str, str | None, str]], *, at: float) -> None:
        """Events no sensor admitted (filtered out), as (event id, model, reason); recorded so that
        `ctloop events list` explains them."""
        self._db.executemany(
            "INSERT INTO sensor_decision_rows (sensor, at, event_id, model, kind, reason) VALUES (?, ?, ?, ?, ?, ?)",
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
            # The event's own rows, and the burst row holding it (found through its seen-event row).
            where.append("(event_id = ? OR seq IN (SELECT burst FROM sensor_events WHERE event_id = ?))")
            args.extend((event_id, event_id))
        if event_prefix:
            where.append("(substr(event_id, 1, ?) = ? OR seq IN (SELECT burst FROM sensor_events"
                         " WHERE burst IS NOT NULL AND substr(event_id, 1, ?) = ?))")
            args.extend((len(event_prefix), event_prefix) * 2)
        sql = f"SELECT {_COLUMNS} FROM sensor_decision_rows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    finally:
        db.close()
    wanted = ((lambda d: d.event_id == event_id) if event_id
              else (lambda d: d.event_id.startswith(event_prefix)) if event_prefix else (lambda d: True))
    return [decided for row in rows for decided in reversed(_rows(row)) if wanted(decided)][:limit]

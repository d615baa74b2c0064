"""The sensor's durable record: events seen, every admission decision, keys that ran, admission state, and
how far each partition was decided.

Kept in SQLite (`settings.state_db`), written in one transaction per consumed batch (each table with
one statement), before offsets are committed. Nothing in it is a b-tree insert per event at a random key:
- a partition's *watermark* (`sensor_offsets`, one row per topic partition) is the highest offset whose
  message was decided; a redelivery after a crash is exactly the messages at or below it, skipped unread;
- the events a batch decided are one row (`sensor_seen`: a JSON object of event id -> content digest),
  from which the sensor rebuilds its bounded in-memory map of recent ids at start. The `sensor_events`
  view gives them back a row per event, for SQL readers;
- the decisions a batch made are one row (`sensor_decision_batches`, one per `record` or
  `record_rejections` call): a JSON array with an entry per decision, `[event id, model, kind, reason,
  key, run id, latency ms, deferred reason]` (a rejection's ends at its reason). A candidate `deferred`
  and then `coalesced` in the same call is one entry (kind `coalesced`, its `deferred` reason in the last
  place); a model's run of such entries (a burst) is kept together, at the place of its first.
- the keys that started a run (or that the engine said already ran) a `record` call wrote are one row
  (`sensor_run_batches`: a JSON array of `[key, model, event id, run id]`); `ran` keeps every key read in
  memory (one per run ever, not per event) and reads only the rows written since it last looked. The
  `sensor_runs` view gives a row per key (its first), for SQL readers.

Readers (`list_decisions`, `DecisionLog.decisions`) give back every decision, in order, one `DecisionRow`
each; the `sensor_decisions` view gives a row per entry (a coalesced one carrying its `deferred` reason),
for SQL readers. Finding an event's decisions scans the packed text newest first (no index by event).
Logs written before packing keep their rows (`sensor_decision_rows`: a row per decision, or per burst;
`sensor_run_rows`: a row per key that ran) and are read as they were, before the packed rows, which number
on from them.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import orjson

from ctloop.sensors.admission import AdmissionState, Decision
from ctloop.sqlite import connect

# Hot tables keyed by random text (event ids, keys) are WITHOUT ROWID: one b-tree to insert into, not a table
# and an index. `sensor_decision_rows` is the layout before packing: read, never written.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sensor_seen (
    seq INTEGER PRIMARY KEY, sensor TEXT NOT NULL, at REAL NOT NULL, events TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS sensor_events AS
    SELECT s.sensor, e.key AS event_id, s.at, e.value AS digest FROM sensor_seen s, json_each(s.events) e;
CREATE TABLE IF NOT EXISTS sensor_offsets (
    sensor TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (sensor, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_decision_rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor TEXT NOT NULL, at REAL NOT NULL, event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL,
    reason TEXT NOT NULL, key TEXT, run_id TEXT, latency_ms REAL, deferred TEXT, burst TEXT
);
CREATE INDEX IF NOT EXISTS sensor_decisions_event ON sensor_decision_rows (event_id);
CREATE INDEX IF NOT EXISTS sensor_decisions_bursts ON sensor_decision_rows (seq) WHERE burst IS NOT NULL;
CREATE TABLE IF NOT EXISTS sensor_decision_batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, at REAL NOT NULL, decisions TEXT NOT NULL
);
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'sensor_decision_batches', newest FROM (SELECT max(seq) AS newest FROM sensor_decision_rows)
    WHERE newest IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'sensor_decision_batches');
CREATE VIEW IF NOT EXISTS sensor_decisions AS
    SELECT seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred
    FROM sensor_decision_rows WHERE burst IS NULL
    UNION ALL
    SELECT r.seq, r.sensor, r.at, m.value ->> 0, r.model, 'coalesced', m.value ->> 3, m.value ->> 1, NULL, NULL,
           m.value ->> 2
    FROM sensor_decision_rows r, json_each(r.burst) m WHERE r.burst IS NOT NULL
    UNION ALL
    SELECT b.seq, b.sensor, b.at, d.value ->> 0, d.value ->> 1, d.value ->> 2, d.value ->> 3, d.value ->> 4,
           d.value ->> 5, d.value ->> 6, d.value ->> 7
    FROM sensor_decision_batches b, json_each(b.decisions) d;
CREATE TABLE IF NOT EXISTS sensor_run_rows (
    key TEXT PRIMARY KEY, sensor TEXT NOT NULL, model TEXT NOT NULL, event_id TEXT NOT NULL, run_id TEXT,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_run_batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, at REAL NOT NULL, runs TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS sensor_runs AS
    SELECT key, sensor, model, event_id, run_id, at FROM (
        SELECT key, sensor, model, event_id, run_id, at, min(seq) FROM (
            SELECT key, sensor, model, event_id, run_id, at, 0 AS seq FROM sensor_run_rows
            UNION ALL
            SELECT r.value ->> 0, b.sensor, r.value ->> 1, r.value ->> 2, r.value ->> 3, b.at, b.seq
            FROM sensor_run_batches b, json_each(b.runs) r
        ) GROUP BY key
    );
CREATE TABLE IF NOT EXISTS sensor_state (sensor TEXT PRIMARY KEY, state TEXT NOT NULL);
"""
_COLUMNS = "seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred, burst"
_BURSTS = "SELECT seq FROM sensor_decision_rows WHERE burst IS NOT NULL AND instr(burst, ?) > 0"
# What `record` reads of a candidate, in one call.
_CANDIDATE = attrgetter("event_id", "model", "key")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NO_MORE = (None,) * 4  # the trailing places an entry may leave out (a rejection's)


def _open(path: Path | str) -> sqlite3.Connection:
    db = connect(path)
    if not _current(db):
        db.execute("BEGIN IMMEDIATE")  # two processes opening an older log migrate it once
        try:
            if not _current(db):
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
    return (kinds.get("sensor_decisions") == "view" and kinds.get("sensor_events") == "view"
            and kinds.get("sensor_runs") == "view"
            and {"sensor_seen", "sensor_offsets", "sensor_run_rows", "sensor_run_batches", "sensor_state",
                 "sensor_decisions_bursts", "sensor_decision_batches"} <= kinds.keys())


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a log written by an older sensor to this shape: decisions a table under another name (with the
    `deferred` and `burst` columns), kept as they are, the view over them redefined to read the packed rows
    too; the keys that ran, once a row each, likewise (under `sensor_run_rows`); seen events, once a row
    each, folded into one `sensor_seen` row per time they were decided (a batch), oldest first, so that the
    newest are rebuilt at start."""
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master"
                            " WHERE name IN ('sensor_decisions', 'sensor_events', 'sensor_runs')"))
    if kinds.get("sensor_runs") == "table":
        db.execute("ALTER TABLE sensor_runs RENAME TO sensor_run_rows")
    if kinds.get("sensor_decisions") == "table":
        db.execute("ALTER TABLE sensor_decisions RENAME TO sensor_decision_rows")
        columns = {name for _, name, *_ in db.execute("PRAGMA table_info(sensor_decision_rows)")}
        for column in ("deferred", "burst"):
            if column not in columns:
                db.execute(f"ALTER TABLE sensor_decision_rows ADD COLUMN {column} TEXT")
    elif kinds.get("sensor_decisions") == "view":
        db.execute("DROP VIEW sensor_decisions")
    if kinds.get("sensor_events") == "table":
        db.execute("CREATE TABLE IF NOT EXISTS sensor_seen (seq INTEGER PRIMARY KEY, sensor TEXT NOT NULL,"
                   " at REAL NOT NULL, events TEXT NOT NULL)")
        db.execute("INSERT INTO sensor_seen (sensor, at, events)"
                   " SELECT sensor, at, json_group_object(event_id, coalesce(digest, '')) FROM sensor_events"
                   " GROUP BY sensor, at ORDER BY at")
        db.execute("DROP TABLE sensor_events")


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


def _legacy_rows(row: tuple) -> list[DecisionRow]:
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


def _unpacked(seq: int, sensor: str, at: float, decisions: str) -> list[DecisionRow]:
    """The decisions one packed row holds, oldest first: a coalesced entry's `deferred` decision before it."""
    out = []
    for entry in _loads(decisions):
        event_id, model, kind, reason, key, run_id, latency_ms, deferred = (*entry, *_NO_MORE)[:8]
        if deferred is not None:
            out.append(DecisionRow(seq, sensor, at, event_id, model, "deferred", deferred, key, run_id, latency_ms))
        out.append(DecisionRow(seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms))
    return out


def _json(value: Any) -> str:
    """JSON text for SQLite's json functions. A lone surrogate (which orjson refuses and UTF-8 cannot hold)
    is written as its escape; the rest as orjson writes it, so that a search of the text for an id matches
    however the row's other strings were written."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _loads(text: str) -> Any:
    """`_json`'s inverse: json's parser where orjson refuses what json wrote (escaped lone surrogates)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class DecisionLog:
    """One sensor group's record in a shared SQLite file."""

    def __init__(self, path: Path | str, sensor: str) -> None:
        self.sensor = sensor
        self._db = _open(path)
        # The keys that ran are probed and inserted at random (`ran`, `record`): keep their pages in memory,
        # and checkpoint the WAL less often, so that a page rewritten batch after batch (those, the
        # watermarks, the state) is copied back once.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.execute("PRAGMA wal_autocheckpoint=16384")
        # The keys that ran, as far as the log has been read (`ran`): the older rows' once, then the packed
        # rows up to `_runs_read`.
        self._ran: set[str] = set()
        self._durable = True  # `connect` makes commits durable (synchronous=FULL)
        self._runs_read: int | None = None

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """One atomic write. `durable=False` skips the fsync: the write survives a killed process but
        may be lost with the machine; use it only for what a restart can reconstruct."""
        if durable != self._durable:  # a statement less per batch, most of which are alike
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def seen(self, event_id: str) -> bool:
        """Whether this event was ever decided (a scan: for tools and tests, not the hot path)."""
        return self._db.execute("SELECT 1 FROM sensor_events WHERE sensor = ? AND event_id = ? LIMIT 1",
                                (self.sensor, event_id)).fetchone() is not None

    def recent_digests(self, limit: int) -> dict[str, str]:
        """The content digests of the (about) `limit` events decided last, oldest first ("" where none was
        recorded): what the sensor's in-memory map of recent ids is rebuilt from. Whole batches: a few more."""
        batches: list[dict[str, str]] = []
        count = 0
        rows = self._db.execute("SELECT events FROM sensor_seen WHERE sensor = ? ORDER BY seq DESC", (self.sensor,))
        for (events,) in rows:
            if count >= limit:
                break
            batch = _loads(events)
            batches.append(batch)
            count += len(batch)
        out: dict[str, str] = {}
        for batch in reversed(batches):
            out.update(batch)
        return out

    def mark_seen(self, digests: Mapping[str, str], *, at: float) -> None:
        """Events now decided, by id, with their content digests: one row for them all."""
        if digests:
            self._db.execute("INSERT INTO sensor_seen (sensor, at, events) VALUES (?, ?, ?)",
                             (self.sensor, at, _json(digests)))

    def watermarks(self) -> dict[tuple[str, int], int]:
        """The highest offset decided on each (topic, partition)."""
        rows = self._db.execute("SELECT topic, partition, offset FROM sensor_offsets WHERE sensor = ?", (self.sensor,))
        return {(topic, partition): offset for topic, partition, offset in rows}

    def advance(self, watermarks: Mapping[tuple[str, int], int]) -> None:
        """Raise these partitions' watermarks (never lowers one). Inside `transaction` only."""
        self._db.executemany(
            "INSERT INTO sensor_offsets VALUES (?, ?, ?, ?) ON CONFLICT (sensor, topic, partition)"
            " DO UPDATE SET offset = max(offset, excluded.offset)",
            [(self.sensor, topic, partition, offset) for (topic, partition), offset in watermarks.items()])

    def ran(self, keys: Collection[str]) -> set[str]:
        """Which of these keys ever triggered a run (in any group writing this file)."""
        if self._runs_read is None:
            self._ran.update(key for (key,) in self._db.execute("SELECT key FROM sensor_run_rows"))
            self._runs_read = 0
        # Only the packed rows committed since the last call are read: `seq` (AUTOINCREMENT, never reused) is
        # given by the one writer SQLite lets in at a time, above every row committed before it took the
        # lock, so any row this read cannot see yet will have a `seq` above the newest it can.
        rows = self._db.execute("SELECT seq, runs FROM sensor_run_batches WHERE seq > ? ORDER BY seq",
                                (self._runs_read,)).fetchall()
        if not rows:
            return self._ran.intersection(keys)
        newer = {entry[0] for _, runs in rows for entry in _loads(runs)}
        if not self._db.in_transaction:
            # Inside an open transaction its own rows may yet roll back (and their `seq` be given again).
            self._ran |= newer
            self._runs_read = rows[-1][0]
        return self._ran.intersection(keys) | newer.intersection(keys)

    def record(self, records: Iterable[tuple[Decision, float | None]], *, at: float) -> None:
        """Decisions, each with its event-to-trigger latency in seconds when it started a run (stored in ms):
        one packed row (see the module's note), and one for the keys that ran. Inside `transaction` only."""
        records = list(records)  # alive through the loop, so that a candidate's id() names it alone
        entries: list[list | None] = []
        runs = []
        deferred: dict[int, int] = {}  # id of a deferred candidate -> its entry
        # model -> (the place of its first entry merging a deferred and a coalesced decision, those entries):
        # a burst, written together at that place (its later entries' places emptied).
        bursts: dict[str, tuple[int, list[list]]] = {}
        append = entries.append
        for (kind, reason, c, run_id), latency_s in records:
            # Merged only when `coalesced` is the next decision about the candidate after its `deferred`
            # (a later `deferred` takes its place; any other decision about it forgets it).
            if kind == "coalesced":
                held = deferred.pop(id(c), None) if deferred else None
                if held is not None:
                    merging = entries[held]
                    merging[2], merging[3], merging[7] = kind, reason, merging[3]
                    burst = bursts.get(merging[1])
                    if burst is None:
                        bursts[merging[1]] = (held, [merging])
                    else:
                        burst[1].append(merging)
                        entries[held] = None
                    continue
            elif kind == "deferred":
                deferred[id(c)] = len(entries)
            elif deferred:
                deferred.pop(id(c), None)
            event_id, model, key = _CANDIDATE(c)
            if run_id is None:
                append([event_id, model, kind, reason, key, None, None, None])
            else:
                append([event_id, model, kind, reason, key, run_id,
                        None if latency_s is None else latency_s * 1000, None])
                runs.append((key, model, event_id, run_id))
        if entries:
            self._db.execute("INSERT INTO sensor_decision_batches (sensor, at, decisions) VALUES (?, ?, ?)",
                             (self.sensor, at, _json(_bursts_together(entries, bursts) if bursts else entries)))
        if runs:
            self._db.execute("INSERT INTO sensor_run_batches (sensor, at, runs) VALUES (?, ?, ?)",
                             (self.sensor, at, _json(runs)))

    def record_rejections(self, rejections: Iterable[tuple[str, str | None, str]], *, at: float) -> None:
        """Events no sensor admitted (filtered out), as (event id, model, reason): one packed row, so that
        `ctloop events list` explains them. Inside `transaction` only."""
        entries = [(event_id, model, "rejected", reason) for event_id, model, reason in rejections]
        if entries:
            self._db.execute("INSERT INTO sensor_decision_batches (sensor, at, decisions) VALUES (?, ?, ?)",
                             (self.sensor, at, _json(entries)))

    def decisions(self) -> Iterator[DecisionRow]:
        """This log's decisions, oldest first, a stored row given back as every decision it holds."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM sensor_decision_rows WHERE sensor = ? ORDER BY seq",
                                (self.sensor,))
        for row in rows:
            yield from _legacy_rows(row)
        rows = self._db.execute("SELECT seq, sensor, at, decisions FROM sensor_decision_batches WHERE sensor = ?"
                                " ORDER BY seq", (self.sensor,))
        for row in rows:
            yield from _unpacked(*row)

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
        found = _packed_decisions(db, model, event_id, event_prefix, limit)
        if len(found) < limit:
            found += _legacy_decisions(db, model, event_id, event_prefix, limit - len(found))
    finally:
        db.close()
    return found


def _packed_decisions(db: sqlite3.Connection, model: str | None, event_id: str | None, event_prefix: str | None,
                      limit: int) -> list[DecisionRow]:
    """`list_decisions` over the packed rows, newest first: the rows whose text holds what an entry asked for
    starts with (`["<id>",`, `["<prefix>`, `,"<model>",`), scanned, then matched exactly once decoded."""
    where, args = [], []
    for needle in ((None if not event_id else "[" + _json(event_id) + ","),
                   (None if not event_prefix else "[" + _json(event_prefix)[:-1]),
                   (None if not model else "," + _json(model) + ",")):
        if needle is not None:
            where.append("instr(decisions, ?) > 0")
            args.append(needle)
    sql = "SELECT seq, sensor, at, decisions FROM sensor_decision_batches"
    if where:
        sql += " WHERE " + " AND ".join(where)
    found: list[DecisionRow] = []
    for row in db.execute(sql + " ORDER BY seq DESC", args):
        found += (decided for decided in reversed(_unpacked(*row))
                  if (not event_id or decided.event_id == event_id) and (not model or decided.model == model)
                  and (not event_prefix or decided.event_id.startswith(event_prefix)))
        if len(found) >= limit:
            return found[:limit]
    return found


def _legacy_decisions(db: sqlite3.Connection, model: str | None, event_id: str | None, event_prefix: str | None,
                      limit: int) -> list[DecisionRow]:
    """`list_decisions` over the rows written before packing, newest first."""
    where, args = [], []
    if model:
        where.append("model = ?")
        args.append(model)
    # An event's own rows by index; the burst rows holding it by scanning the burst rows alone for the
    # text a member's entry starts with (`["<id>",`); the exact match is made on the decoded rows below.
    if event_id:
        where.append(f"(event_id = ? OR seq IN ({_BURSTS}))")
        args.extend((_bindable(event_id), "[" + _json(event_id) + ","))
    if event_prefix:
        where.append(f"(substr(event_id, 1, ?) = ? OR seq IN ({_BURSTS}))")
        args.extend((len(event_prefix), _bindable(event_prefix), "[" + _json(event_prefix)[:-1]))
    sql = f"SELECT {_COLUMNS} FROM sensor_decision_rows"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    wanted = ((lambda d: d.event_id == event_id) if event_id
              else (lambda d: d.event_id.startswith(event_prefix)) if event_prefix else (lambda d: True))
    return [decided for row in rows for decided in reversed(_legacy_rows(row)) if wanted(decided)][:limit]


def _bindable(text: str) -> str | None:
    """`text` as a query parameter, or None (equal to nothing) where UTF-8 cannot hold it, nor so a column."""
    return None if _SURROGATE.search(text) else text


def _bursts_together(entries: list[list | None], bursts: dict[str, tuple[int, list[list]]]) -> list[list]:
    """The entries in order, but a model's merged entries (its burst) together at the place of the first to
    merge, in the order they merged (the later ones' places are empty): the order the logs before packing (a
    row per burst) give back."""
    out: list[list] = []
    done = 0
    for head, members in sorted(bursts.values(), key=itemgetter(0)):
        out += filter(None, entries[done:head])
        out += members
        done = head + 1
    out += filter(None, entries[done:])
    return out

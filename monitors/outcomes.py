"""The outcome store: served predictions joined to the labels that arrive later, durable in SQLite.

Public, for the joiner, the quality monitor and the bake window:
- `OutcomeStore(url)`: the durable store of predictions, labels and joined rows (`sqlite:///<path>`);
  `.joined(model, version, since=..., until=..., role=...)` reads joined rows back;
- the records it takes and gives (defined in `outcome_records`): `JoinedPrediction`, one served prediction
  with its label; `ServedBatch`, `Label`, a served prediction batch and a label as the joiner hands them over.
Live quality on joined rows is `live_quality.live_quality`.

Roles: serving logs the champion's outputs as role "champion" and a shadow challenger's as "shadow". A
shadow row may carry the same prediction id as the champion's row of the same request: a label naming that
id joins both, so both models are scored on the same live labels.

Layout: a served batch is one row (its JSON as served). Serving names its rows `<batch key>-<i>`, so such a
batch is found by its key alone; rows of batches whose ids follow no such form get one index row each. Labels
join in memory (`JoinIndex`: the newest `memory_rows` served rows, the ids of the labels settled against them,
the pending labels, the champion's entity keys), built from the file at the first write and falling back to
the file for older rows; what one write settles against one stored batch (joined, late or duplicate labels) is
one appended row per state, its labels packed in it as arrays.

What is guaranteed: a batch is stored once per role (a batch with a key by its key; one without by its first
id), a prediction joins at most one label per role (later ones are `duplicate`), and a label id is settled once
(the writer knows the id of every pending label and of every label settled against a prediction it holds or
looks up). Everything a poll brings is written in one transaction with the consumer offsets it reached
(`offsets()`), before the joiner commits them to the bus: a redelivered message is at or below them, skipped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ctloop.failures import Refused
from ctloop.monitors.join_index import JoinIndex
from ctloop.monitors.outcome_records import (
    CHAMPION,
    SHADOW,
    JoinCounts,
    JoinedPrediction,
    Label,
    ServedBatch,
    batch_key,
)
from ctloop.sqlite import connect

# The records the store takes and gives are public here too, where its callers have always found them.
__all__ = ["CHAMPION", "DEFAULT_MEMORY_ROWS", "SHADOW", "JoinCounts", "JoinedPrediction", "Label", "OutcomeStore",
           "OutcomeStoreError", "ServedBatch", "batch_key", "default_url"]


class OutcomeStoreError(ValueError, Refused):
    """An outcome store URL ctloop cannot open; the message says which forms it takes."""


def _path_of(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise OutcomeStoreError(f"outcome store URL {url!r} is not supported: use sqlite:///<path> "
                                "(e.g. sqlite:////var/lib/ctloop/outcomes.db)")
    return Path(url.removeprefix("sqlite:///"))


def default_url(home: Path) -> str:
    """The embedded default: a SQLite file under the ctloop home."""
    return f"sqlite:///{(home / 'outcomes.db').resolve()}"


_SCHEMA = (
    # A served batch is one row: its JSON as served (read back for joined rows only) and, when its ids follow
    # serving's `<batch key>-<i>` form, its key, which indexes every one of its rows at once.
    "CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY, key TEXT, role TEXT NOT NULL,"
    " model TEXT NOT NULL, version TEXT, served_at REAL NOT NULL, n INTEGER NOT NULL, entities BLOB,"
    " body BLOB NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_key ON batches (key, role) WHERE key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS batches_served ON batches (model, served_at)",
    # Rows whose ids follow no pattern (other producers, ids the joiner made): one row per id, the fallback.
    "CREATE TABLE IF NOT EXISTS served_ids (prediction_id TEXT NOT NULL, role TEXT NOT NULL,"
    " batch_id INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (prediction_id, role)) WITHOUT ROWID",
    # Append-only: the labels one write settled against one stored batch in one state (joined, late, duplicate),
    # packed as parallel JSON arrays, `n` long: the batch rows they settled on, their label ids, their labels,
    # when each was observed, and (NULL when every row of a batch with a key is named by `<key>-<row>`) the
    # prediction ids they named. One row per batch and write, not per label: a row per label cost SQLite ~3 us.
    "CREATE TABLE IF NOT EXISTS settled (batch_id INTEGER NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,"
    " rows BLOB NOT NULL, label_ids BLOB NOT NULL, prediction_ids BLOB, labels BLOB NOT NULL,"
    " observed_at BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS settled_batch ON settled (batch_id)",
    # Labels whose prediction has not come yet; deleted when they settle.
    "CREATE TABLE IF NOT EXISTS pending (label_id TEXT NOT NULL, prediction_id TEXT, model TEXT, entity TEXT,"
    " label BLOB NOT NULL, observed_at REAL NOT NULL)",
    # The consumer's position, written with what it brought: a redelivered message is skipped, not re-read.
    "CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
    " PRIMARY KEY (topic, partition))",
    "CREATE TABLE IF NOT EXISTS episodes (model TEXT NOT NULL, version TEXT NOT NULL, metric TEXT NOT NULL,"
    " number INTEGER NOT NULL, degraded INTEGER NOT NULL, PRIMARY KEY (model, version, metric))",
)
_EARLIER_LAYOUTS = ("predictions", "served", "joined", "labels", "outcomes")
DEFAULT_MEMORY_ROWS = 500_000

_JOINED_SQL = ("SELECT b.batch_id, b.key, b.model, b.version, b.role, b.served_at, o.rows, o.prediction_ids,"
               " o.labels, o.observed_at FROM batches b JOIN settled o ON o.batch_id = b.batch_id"
               " WHERE o.state = 'joined' AND b.model = ? AND b.served_at >= ?")
_HAS_JOINED = "EXISTS (SELECT 1 FROM settled o WHERE o.batch_id = b.batch_id AND o.state = 'joined')"


class OutcomeStore:
    """Predictions, labels and their join, durable in SQLite (one file; WAL, so readers run beside the joiner).

    The writer (`add`) keeps an index of the newest `memory_rows` served rows in memory, built from the file at
    its first write; older rows are looked up in the file. Readers never build it."""

    def __init__(self, url: str, *, memory_rows: int = DEFAULT_MEMORY_ROWS) -> None:
        self.url = url
        self.path = _path_of(url)
        self._db = connect(self.path)
        self._memory_rows = memory_rows
        self._index: JoinIndex | None = None
        with self.transaction() as db:
            earlier = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                       if r[0] in _EARLIER_LAYOUTS]
            if earlier:
                raise OutcomeStoreError(f"{self.path} was written by an earlier ctloop (tables {', '.join(earlier)}):"
                                        " move it aside (a new store holds what arrives from then on)")
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything in it is durable together, or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            self._index = None  # memory may hold what the file does not: rebuilt from the file at the next write
            raise
        self._db.execute("COMMIT")

    def add(self, batches: Iterable[ServedBatch], labels: Iterable[Label], *, horizon_s: float,
            offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Store served batches and labels (each once, however often delivered) and join what now matches, in
        one transaction with the consumer `offsets` ((topic, partition) -> last offset) they came up to. A label
        observed more than `horizon_s` after its prediction was served is kept as late."""
        with self.transaction() as db:
            self.add_in(db, batches, labels, horizon_s=horizon_s, offsets=offsets)

    def add_in(self, db: sqlite3.Connection, batches: Iterable[ServedBatch], labels: Iterable[Label], *,
               horizon_s: float, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """`add` inside the caller's `transaction()`, so that more can be written with it."""
        if self._index is None:
            self._index = JoinIndex(db, self._memory_rows)
        self._index.add(db, batches, labels, horizon_s)
        if offsets:
            db.executemany("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition)"
                           " DO UPDATE SET offset = excluded.offset",
                           [(topic, partition, offset) for (topic, partition), offset in offsets.items()])

    def offsets(self) -> dict[tuple[str, int], int]:
        """The last offset stored per (topic, partition): a message at or below it is in the store."""
        return {(t, p): o for t, p, o in self._db.execute("SELECT topic, partition, offset FROM offsets")}

    def joined(self, model: str, version: str | None, *, since: datetime, until: datetime | None = None,
               role: str | None = None) -> list[JoinedPrediction]:
        """Joined rows of `model` `version` (None: every version) served in [since, until), oldest first."""
        sql, args = _JOINED_SQL, [model, since.timestamp()]
        if version is not None:
            sql += " AND b.version = ?"
            args.append(version)
        if until is not None:
            sql += " AND b.served_at < ?"
            args.append(until.timestamp())
        if role is not None:
            sql += " AND b.role = ?"
            args.append(role)
        runs = self._db.execute(sql, args).fetchall()
        wanted = orjson.dumps(sorted({run[0] for run in runs}))
        bodies = {batch_id: _load_body(body) for batch_id, body in self._db.execute(
            "SELECT batch_id, body FROM batches WHERE batch_id IN (SELECT value FROM json_each(?))", (wanted,))}
        rows = [row for run in runs for row in _joined_rows(run, bodies[run[0]])]
        rows.sort(key=lambda r: (r.served_at, r.prediction_id, r.role))
        return rows

    def versions(self, model: str, *, since: datetime, role: str | None = CHAMPION) -> list[str]:
        """The versions of `model` with joined rows served since `since`."""
        sql = "SELECT DISTINCT version FROM batches b WHERE model = ? AND served_at >= ? AND version IS NOT NULL"
        args: list[Any] = [model, since.timestamp()]
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        return sorted((r[0] for r in self._db.execute(sql + f" AND {_HAS_JOINED}", args)), key=_version_order)

    def latest_version(self, model: str, *, since: datetime, role: str | None = CHAMPION) -> str | None:
        """The version of the most recently served joined row of `model` (in `role`) since `since`."""
        sql = "SELECT version FROM batches b WHERE model = ? AND served_at >= ? AND version IS NOT NULL"
        args: list[Any] = [model, since.timestamp()]
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        found = self._db.execute(sql + f" AND {_HAS_JOINED} ORDER BY served_at DESC LIMIT 1", args).fetchone()
        return found[0] if found else None

    def joined_count(self) -> int:
        """Joined rows in the store (the writer counts them as it goes)."""
        if self._index is not None:
            return self._index.joined
        return int(self._db.execute("SELECT COALESCE(SUM(n), 0) FROM settled WHERE state = 'joined'").fetchone()[0])

    def counts(self, model: str | None = None) -> JoinCounts:
        where, args = ("WHERE model = ?", (model,)) if model else ("", ())
        predictions = self._db.execute(f"SELECT COALESCE(SUM(n), 0) FROM batches {where}", args).fetchone()[0]
        states = dict.fromkeys(("joined", "late", "duplicate"), 0)
        if model:
            sql = ("SELECT o.state, SUM(o.n) FROM settled o JOIN batches b ON b.batch_id = o.batch_id"
                   " WHERE b.model = ? GROUP BY o.state")
        else:
            sql = "SELECT state, SUM(n) FROM settled GROUP BY state"
        for state, n in self._db.execute(sql, args):
            states[state] = n
        # A pending label known by id has no model yet; by entity key, its own.
        pending = self._db.execute(f"SELECT COUNT(*) FROM pending {where}", args).fetchone()[0]
        return JoinCounts(predictions, states["joined"], pending, states["late"], states["duplicate"])

    def label_states(self) -> dict[str, str]:
        """Every label's state by its id: what tests and operators check for loss and double counting."""
        states = {label_id: state for state, label_ids in self._db.execute("SELECT state, label_ids FROM settled")
                  for label_id in orjson.loads(label_ids)}
        states.update((label_id, "pending") for (label_id,) in self._db.execute("SELECT label_id FROM pending"))
        return states

    def episode(self, model: str, version: str, metric: str) -> tuple[int, bool]:
        """(episodes so far, whether one is open) of a quality rule on one version."""
        found = self._db.execute("SELECT number, degraded FROM episodes WHERE model = ? AND version = ? AND"
                                 " metric = ?", (model, version, metric)).fetchone()
        return (int(found[0]), bool(found[1])) if found else (0, False)

    def set_episode(self, model: str, version: str, metric: str, number: int, degraded: bool) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO episodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, version, metric)"
                       " DO UPDATE SET number = excluded.number, degraded = excluded.degraded",
                       (model, version, metric, number, int(degraded)))

    def close(self) -> None:
        self._db.close()


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _load_body(body: bytes) -> dict[str, Any]:
    # What the joiner stored parsed as a prediction batch; json takes what orjson refuses (NaN) alike.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _features(body: dict[str, Any], i: int) -> dict[str, Any]:
    """Row `i`'s features. The joiner stores batches malformed only in feature cells (a columnar row of the wrong
    width, or not a list): such a row gives the features it has, never an error to the quality monitor."""
    if "rows" in body:
        return body["rows"][i]
    values = body["data"][i]
    return dict(zip(body["columns"], values, strict=False)) if isinstance(values, list) else {}


def _joined_rows(run: tuple[Any, ...], body: dict[str, Any]) -> Iterator[JoinedPrediction]:
    _, key, model, version, role, served_at, rows, pids, labels, observed = run
    served, predictions = _when(served_at), body["predictions"]
    names = orjson.loads(pids) if pids else None
    for k, (index, label, at) in enumerate(zip(orjson.loads(rows), _load_body(labels), orjson.loads(observed),
                                               strict=True)):
        pid = names[k] if names is not None and names[k] is not None else f"{key}-{index}"
        yield JoinedPrediction(pid, model, version, role, _features(body, index), predictions[index], label,
                               served, _when(at))



"""Outcomes: served predictions joined to the labels that arrive later, and live quality computed on them.

Public, for the joiner, the quality monitor and the bake window:
- `JoinedPrediction`: one served prediction with its label;
- `ServedBatch`, `Label`: a served prediction batch and a label, as the joiner hands them to the store;
- `OutcomeStore(url)`: the durable store of predictions, labels and joined rows (`sqlite:///<path>`);
  `.joined(model, version, since=..., until=..., role=...)` reads joined rows back;
- `live_quality(rows, metrics)`: the named metrics (the promotion policy's names) of joined rows, pure.

Roles: serving logs the champion's outputs as role "champion" and a shadow challenger's as "shadow". A
shadow row may carry the same prediction id as the champion's row of the same request: a label naming that
id joins both, so both models are scored on the same live labels.

Layout: a served batch is one row (its JSON as served). Serving names its rows `<batch key>-<i>`, so such a
batch is found by its key alone; rows of batches whose ids follow no such form get one index row each. Labels
join in memory (`_Index`: the newest `memory_rows` served rows, the ids of the labels settled against them,
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
import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from ctloop.failures import Refused
from ctloop.metrics import classification_metrics, label_key, regression_metrics
from ctloop.modelspec import REGRESSION_METRICS
from ctloop.predictions import BatchHead, PredictionBatch
from ctloop.sqlite import connect

CHAMPION = "champion"
SHADOW = "shadow"


@dataclass(frozen=True)
class JoinedPrediction:
    """A served prediction and the label observed for it. `prediction` is what serving returned for the row:
    a label or value, or a mapping of class to probability. `features` are the row's as served (of a row whose
    cells were malformed, which the joiner stores, the ones it has)."""

    prediction_id: str
    model: str
    version: str | None
    role: str
    features: dict[str, Any]
    prediction: Any
    label: Any
    served_at: datetime
    observed_at: datetime


@dataclass(frozen=True)
class LiveQuality:
    """Metrics of `n` joined rows; a metric the rows cannot define (an AUC over one class) is absent."""

    n: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedBatch:
    """One prediction batch as the store keeps it: `body` is the batch's JSON as served (its rows and
    predictions, read back only for joined rows); `ids[i]` and `entities[i]` (row i's key value, if any)
    name row i."""

    model: str
    version: str | None
    role: str
    served_at: datetime
    ids: Sequence[str]
    entities: Sequence[str | None]
    body: bytes

    @classmethod
    def of(cls, batch: PredictionBatch, *, key: str | None = None, ids: Sequence[str] | None = None,
           body: bytes | None = None) -> ServedBatch:
        """The store's view of `batch`: entities from its `key` column, `ids` unless the batch has its own,
        and `body` (default: the batch serialised) as received."""
        ids = batch.ids or ids
        if ids is None:
            raise ValueError("a served batch needs an id per row: the batch has none and none were given")
        values = batch.column(key) if key is not None else None
        entities = [None if v is None else label_key(v) for v in values] if values is not None else [None] * batch.count
        served_at = batch.ts if batch.ts.tzinfo else batch.ts.replace(tzinfo=UTC)
        return cls(batch.model, batch.version, batch.role or CHAMPION, served_at, ids, entities,
                   batch.to_bytes() if body is None else body)

    @classmethod
    def of_head(cls, head: BatchHead, *, ids: Sequence[str], body: bytes) -> ServedBatch:
        """`of` for a batch read by `read_head` (its key column read, if any): `ids` unless it has its own."""
        keys = head.keys
        entities = [None if v is None else label_key(v) for v in keys] if keys is not None else [None] * head.count
        served_at = head.ts if head.ts.tzinfo else head.ts.replace(tzinfo=UTC)
        return cls(head.model, head.version, head.role, served_at, head.ids or ids, entities, body)


class Label(NamedTuple):
    """One label event as the store keeps it (`label_id` is the event's id). A tuple: the joiner makes one per
    label, and a frozen dataclass costs five times as much to make."""

    label_id: str
    label: Any
    observed_at: datetime
    prediction_id: str | None = None
    model: str | None = None
    entity: str | None = None


@dataclass(frozen=True)
class JoinCounts:
    """What the store holds, by label state."""

    predictions: int
    joined: int
    pending: int
    late: int
    duplicate: int


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
        self._index: _Index | None = None
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
            self._index = _Index(db, self._memory_rows)
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


def batch_key(ids: Sequence[str]) -> str | None:
    """The key of a batch whose ids are `<key>-0`, `<key>-1`, ... (serving's form), else None."""
    key, _, last = ids[-1].rpartition("-") if ids else ("", "", "")
    if not key or last != str(len(ids) - 1):
        return None
    prefix = key + "-"
    return key if [*ids] == [f"{prefix}{i}" for i in range(len(ids))] else None


def _split(prediction_id: str) -> tuple[str, int] | None:
    """(batch key, row) of an id in serving's form."""
    key, _, row = prediction_id.rpartition("-")
    return (key, int(row)) if key and row.isdigit() and (row == "0" or row[0] != "0") else None


@dataclass(slots=True, eq=False)
class _Member:
    """One stored batch's share of a group: its rows `row0 .. row0 + n - 1` are the group's 0 .. n - 1."""

    batch_id: int
    role: str
    model: str
    version: str | None
    served_at: float
    row0: int
    n: int
    entities: Sequence[str | None] | None = None


@dataclass(slots=True, eq=False)
class _Group:
    """Predictions known by one key: a batch key (its rows in every role) or one fallback prediction id."""

    key: str
    single: bool
    members: list[_Member]
    first: float
    n: int  # rows of its largest member
    even: bool = True  # every member has all n rows
    joined: dict[int, str] = field(default_factory=dict)  # row -> the id of the label it joined
    label_ids: list[str] = field(default_factory=list)  # every label settled against the group

    def holding(self, i: int) -> list[_Member]:
        """The members with a row `i`."""
        return self.members if self.even else [m for m in self.members if i < m.n]


@dataclass(slots=True, eq=False)
class _Pending:
    seq: int  # its row in the pending table: the order labels arrived in
    label: Label
    blob: bytes


class _Index:
    """The writer's memory of the store: recent groups, the label ids settled against them, the pending labels
    and the champion's entity keys; exact for what it holds, with the file behind it for the rest."""

    def __init__(self, db: sqlite3.Connection, memory_rows: int) -> None:
        self.memory_rows = memory_rows
        self.groups: dict[str, _Group] = {}
        self.singles: dict[str, _Group] = {}
        self.order: deque[tuple[bool, str]] = deque()
        self.held = 0
        self.partial = False  # the file has rows memory does not
        self.known: set[str] = set()
        self.pending: dict[str, _Pending] = {}
        self.pending_by_pid: dict[str, list[str]] = {}
        self.pending_by_key: dict[str, set[str]] = {}
        self.pending_by_entity: dict[tuple[str, str], list[str]] = {}
        # model -> entity -> its champion rows as (served at, group, row), one tuple while there is one (most
        # entities), a list after: a tuple and a list per row would double what the index takes in memory.
        self.entities: dict[str, dict[str, Any]] = {}
        self.blobs: dict[tuple[type, Any], bytes] = {}  # labels are mostly a few values: each serialised once
        self._at: datetime | None = None
        self._ts = 0.0
        self.joined = int(db.execute("SELECT COALESCE(SUM(n), 0) FROM settled WHERE state = 'joined'").fetchone()[0])
        self._load(db)

    # -- building from the file ------------------------------------------------------------------------------

    def _load(self, db: sqlite3.Connection) -> None:
        rows, floor = 0, None
        for batch_id, n in db.execute("SELECT batch_id, n FROM batches ORDER BY batch_id DESC"):
            if rows + n > self.memory_rows and rows:
                self.partial = True
                break
            rows, floor = rows + n, batch_id
        if floor is not None:
            fallback: dict[int, list[tuple[str, int]]] = {}
            for pid, batch_id, row in db.execute("SELECT prediction_id, batch_id, row FROM served_ids"
                                                 " WHERE batch_id >= ?", (floor,)):
                fallback.setdefault(batch_id, []).append((pid, row))
            batches = db.execute("SELECT batch_id, key, role, model, version, served_at, n, entities FROM batches"
                                 " WHERE batch_id >= ? ORDER BY batch_id", (floor,)).fetchall()
            self._adopt(db, batches, fallback, floor)
        for rowid, label_id, pid, model, entity, blob, observed in db.execute(
                "SELECT rowid, label_id, prediction_id, model, entity, label, observed_at FROM pending ORDER BY rowid"):
            self._hold(_Pending(rowid, Label(label_id, None, _when(observed), prediction_id=pid, model=model,
                                             entity=entity), blob))

    def _adopt(self, db: sqlite3.Connection, batches: Sequence[tuple[Any, ...]],
               fallback: Mapping[int, list[tuple[str, int]]], floor: int | None = None) -> list[_Group]:
        """Bring stored batches (and the labels settled against them) into memory; returns their groups. With
        `floor`, the batches are every one from that id on."""
        keyed: dict[int, _Group] = {}
        where: dict[tuple[int, int], _Group] = {}
        touched: list[_Group] = []
        for batch_id, key, role, model, version, served_at, n, entities in batches:
            ents = orjson.loads(entities) if entities else None
            if key is not None:
                member = _Member(batch_id, role, model, version, served_at, 0, n, ents)
                group = self._attach(key, False, member)
                touched.append(group)
                keyed[batch_id] = group
                if ents and role == CHAMPION:
                    self._index_entities(group, member)
            for pid, row in fallback.get(batch_id, ()):
                member = _Member(batch_id, role, model, version, served_at, row, 1,
                                 [ents[row]] if ents else None)
                group = self._attach(pid, True, member)
                touched.append(group)
                where[(batch_id, row)] = group
                if ents and role == CHAMPION:
                    self._index_entities(group, member)
        if floor is not None:
            runs = db.execute("SELECT batch_id, state, rows, label_ids FROM settled WHERE batch_id >= ?", (floor,))
        else:
            runs = db.execute("SELECT batch_id, state, rows, label_ids FROM settled WHERE batch_id IN"
                              " (SELECT value FROM json_each(?))", (orjson.dumps([b[0] for b in batches]),))
        settled = ((label_id, state, batch_id, row) for batch_id, state, rows, label_ids in runs
                   for row, label_id in zip(orjson.loads(rows), orjson.loads(label_ids), strict=True))
        for label_id, state, batch_id, row in settled:
            group, i = keyed.get(batch_id), row
            if group is None:
                group, i = where.get((batch_id, row)), 0
            if group is not None:
                if state == "joined":
                    group.joined[i] = label_id
                if label_id not in self.known:
                    self.known.add(label_id)
                    group.label_ids.append(label_id)
        return touched

    def _attach(self, key: str, single: bool, member: _Member) -> _Group:
        table = self.singles if single else self.groups
        group = table.get(key)
        if group is None:
            group = table[key] = _Group(key, single, [member], member.served_at, member.n)
            self.order.append((single, key))
            self.held += member.n
            self._evict()
        else:
            group.members.append(member)
            group.first = min(group.first, member.served_at)
            group.even = group.even and member.n == group.n
            group.n = max(group.n, member.n)
            self.held += member.n
        return group

    def _index_entities(self, group: _Group, member: _Member) -> None:
        index, at = self.entities.setdefault(member.model, {}), member.served_at
        for i, entity in enumerate(member.entities or ()):
            if entity is not None:
                held = index.get(entity)
                if held is None:
                    index[entity] = (at, group, i)
                elif isinstance(held, tuple):
                    index[entity] = [held, (at, group, i)]
                else:
                    held.append((at, group, i))

    def _entity_rows(self, model: str, entity: str) -> list[tuple[float, _Group, int]]:
        held = self.entities.get(model, {}).get(entity)
        return [] if held is None else [held] if isinstance(held, tuple) else held

    def _evict(self) -> None:
        while self.held > self.memory_rows and len(self.order) > 1:
            single, key = self.order.popleft()
            group = (self.singles if single else self.groups).pop(key)
            self.held -= sum(m.n for m in group.members)
            self.known.difference_update(group.label_ids)
            for member in group.members:
                index = self.entities.get(member.model, {})
                for entity in member.entities or ():
                    if entity is not None and entity in index:
                        kept = [e for e in self._entity_rows(member.model, entity) if e[1] is not group]
                        if kept:
                            index[entity] = kept[0] if len(kept) == 1 else kept
                        else:
                            del index[entity]
            self.partial = True

    # -- finding predictions ----------------------------------------------------------------------------------

    def find(self, db: sqlite3.Connection, pid: str) -> tuple[_Group, int] | None:
        """The group and row of prediction `pid`, from memory or else the file."""
        split = _split(pid)
        if split is not None:
            group = self.groups.get(split[0])
            if group is None and self.partial:
                group = self._fetch_group(db, split[0])
            if group is not None and split[1] < group.n:
                return group, split[1]
        group = self.singles.get(pid)
        if group is None and self.partial:
            group = self._fetch_single(db, pid)
        return (group, 0) if group is not None else None

    def _fetch_group(self, db: sqlite3.Connection, key: str) -> _Group | None:
        batches = db.execute("SELECT batch_id, key, role, model, version, served_at, n, entities FROM batches"
                             " WHERE key = ? ORDER BY batch_id", (key,)).fetchall()
        return self._adopt(db, batches, {})[0] if batches else None

    def _fetch_single(self, db: sqlite3.Connection, pid: str) -> _Group | None:
        found = db.execute("SELECT batch_id, row FROM served_ids WHERE prediction_id = ? ORDER BY batch_id",
                           (pid,)).fetchall()
        if not found:
            return None
        fallback: dict[int, list[tuple[str, int]]] = {b: [(pid, row)] for b, row in found}
        batches = db.execute("SELECT batch_id, NULL, role, model, version, served_at, n, entities FROM batches"
                             " WHERE batch_id IN (SELECT value FROM json_each(?)) ORDER BY batch_id",
                             (orjson.dumps(list(fallback)),)).fetchall()
        return self._adopt(db, batches, fallback)[0]

    def by_entity(self, db: sqlite3.Connection, model: str, entity: str, observed_at: float,
                  ) -> tuple[_Group, int] | None:
        """The newest champion prediction of `entity` served at or before `observed_at`."""
        best = None
        for served_at, group, i in self._entity_rows(model, entity):
            if served_at <= observed_at and (best is None or served_at >= best[0]):
                best = (served_at, group, i)
        if best is not None:
            return best[1], best[2]
        if not self.partial:
            return None
        found = db.execute("SELECT b.key, j.key, s.prediction_id FROM batches b, json_each(b.entities) j"
                           " LEFT JOIN served_ids s ON s.batch_id = b.batch_id AND s.row = j.key"
                           " WHERE b.model = ? AND b.role = ? AND j.value = ? AND b.served_at <= ?"
                           " ORDER BY b.served_at DESC LIMIT 1", (model, CHAMPION, entity, observed_at)).fetchone()
        if found is None:
            return None
        return self.find(db, found[2] if found[0] is None else f"{found[0]}-{found[1]}")

    # -- one poll ---------------------------------------------------------------------------------------------

    def add(self, db: sqlite3.Connection, batches: Iterable[ServedBatch], labels: Iterable[Label],
            horizon_s: float) -> None:
        outcomes: list[tuple[Any, ...]] = []
        woken: set[str] = set()
        for batch in batches:
            self._add_batch(db, batch, outcomes, woken)
        waiting = sorted((self.pending[label_id] for label_id in woken), key=lambda p: p.seq)
        settled: list[tuple[int]] = []
        for item in waiting:
            if self._settle(db, item.label, item.blob, horizon_s, outcomes):
                self._release(item)
                settled.append((item.seq,))
        known, groups, blobs, entities = self.known, self.groups, self.blobs, self.entities
        at, observed = None, 0.0  # a batch's labels mostly share one `observed_at` object: its timestamp once
        for label in labels:
            label_id, pid = label.label_id, label.prediction_id
            if label_id in known:
                continue  # delivered again, or sent again under the same id: settled once already
            value = label.label
            scalar = value.__class__ in _SCALARS
            blob = blobs.get((value.__class__, value)) if scalar else None
            if blob is None:
                blob = _blob(value)
                if scalar and len(blobs) < 1024:
                    blobs[(value.__class__, value)] = blob
            if pid is not None:
                # The common case inline: a label for a row of a batch in memory, in time, not labelled yet.
                key, _, row = pid.rpartition("-")
                group = groups.get(key)
                if group is not None and group.even and row.isdigit() and (row == "0" or row[0] != "0"):
                    i = int(row)
                    if label.observed_at is not at:
                        at = label.observed_at
                        observed = at.timestamp()
                    if i < group.n and i not in group.joined and observed - group.first <= horizon_s:
                        group.joined[i] = label_id
                        members = group.members
                        if len(members) == 1:
                            outcomes.append((label_id, "joined", None, members[0].batch_id, i, blob, observed))
                        else:
                            outcomes += [(label_id, "joined", None, m.batch_id, i, blob, observed) for m in members]
                        self.joined += len(members)
                        known.add(label_id)
                        group.label_ids.append(label_id)
                        continue
            else:
                # Likewise by entity key: the entity's one champion row in memory, served before the label was
                # observed (so the newest such row: memory holds the newest rows), in time, not labelled yet.
                held = entities.get(label.model, _NONE).get(label.entity)
                if held.__class__ is tuple:
                    served, group, i = held
                    if label.observed_at is not at:
                        at = label.observed_at
                        observed = at.timestamp()
                    if (served <= observed and group.even and not group.single and i not in group.joined
                            and observed - group.first <= horizon_s):
                        group.joined[i] = label_id
                        outcomes += [(label_id, "joined", None, m.batch_id, i, blob, observed) for m in group.members]
                        self.joined += len(group.members)
                        known.add(label_id)
                        group.label_ids.append(label_id)
                        continue
            if not self._settle(db, label, blob, horizon_s, outcomes):
                rowid = db.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)", (
                    label.label_id, label.prediction_id, label.model, label.entity, blob,
                    label.observed_at.timestamp())).lastrowid
                assert rowid is not None
                self._hold(_Pending(rowid, label, blob))
        if outcomes:
            _write(db, outcomes)
        if settled:
            db.executemany("DELETE FROM pending WHERE rowid = ?", settled)

    def _add_batch(self, db: sqlite3.Connection, b: ServedBatch, outcomes: list[tuple[Any, ...]],
                   woken: set[str]) -> None:
        if not b.ids:
            return
        key = batch_key(b.ids)
        if key is not None:
            group = self.groups.get(key) or (self._fetch_group(db, key) if self.partial else None)
            if group is not None and any(m.role == b.role for m in group.members):
                return  # sent again: stored already
        else:
            first = self.singles.get(b.ids[0]) or (self._fetch_single(db, b.ids[0]) if self.partial else None)
            if first is not None and any(m.role == b.role for m in first.members):
                return
        entities = b.entities if any(e is not None for e in b.entities) else None
        ts = b.served_at.timestamp()
        batch_id = db.execute("INSERT INTO batches VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (key, b.role, b.model, b.version, ts, len(b.ids),
                               orjson.dumps(entities) if entities else None, b.body)).lastrowid
        assert batch_id is not None
        members: list[tuple[_Group, _Member]] = []
        if key is not None:
            member = _Member(batch_id, b.role, b.model, b.version, ts, 0, len(b.ids), entities)
            members.append((self._attach(key, False, member), member))
            woken.update(self.pending_by_key.get(key, ()))
        else:
            db.executemany("INSERT OR IGNORE INTO served_ids VALUES (?, ?, ?, ?)",
                           [(pid, b.role, batch_id, i) for i, pid in enumerate(b.ids)])
            for i, pid in enumerate(b.ids):
                member = _Member(batch_id, b.role, b.model, b.version, ts, i, 1,
                                 [entities[i]] if entities else None)
                members.append((self._attach(pid, True, member), member))
                woken.update(self.pending_by_pid.get(pid, ()))
        for group, member in members:
            if member.entities and member.role == CHAMPION:
                self._index_entities(group, member)
                waiting = self.pending_by_entity
                for entity in member.entities if waiting else ():
                    if entity is not None:
                        woken.update(waiting.get((member.model, entity), ()))
            if group.joined and len(group.members) > 1:
                self._join_new_member(db, group, member, outcomes)

    def _join_new_member(self, db: sqlite3.Connection, group: _Group, member: _Member,
                         outcomes: list[tuple[Any, ...]]) -> None:
        """A row of another role (a shadow's) arriving after its request's label joined joins that label too."""
        other = group.members[0]
        for i, label_id in group.joined.items():
            if i >= member.n:
                continue
            found = next((o for o in outcomes if o[0] == label_id), None) or _stored(db, other.batch_id,
                                                                                      other.row0 + i, label_id)
            if found is not None:
                outcomes.append((label_id, "joined", group.key if group.single else None, member.batch_id,
                                 member.row0 + i, found[5], found[6]))
                self.joined += 1

    def _settle(self, db: sqlite3.Connection, label: Label, blob: bytes, horizon_s: float,
                outcomes: list[tuple[Any, ...]]) -> bool:
        """Join `label` (or keep it as late or duplicate) if its prediction is known; False when it waits."""
        at = label.observed_at
        if at is not self._at:  # labels of one event mostly share one `observed_at` object
            self._at, self._ts = at, at.timestamp()
        observed = self._ts
        if label.prediction_id is not None:
            found = self.find(db, label.prediction_id)
        else:
            assert label.model is not None and label.entity is not None
            found = self.by_entity(db, label.model, label.entity, observed)
        if found is None:
            return False
        group, i = found
        if label.label_id in self.known and label.label_id not in self.pending:
            return True  # found in the file with its prediction: settled before
        pid = (label.prediction_id or group.key) if group.single else None  # else the batch key names it
        members = group.holding(i)
        first = group.first if group.even else min(m.served_at for m in members)
        if observed - first > horizon_s:
            outcomes.append((label.label_id, "late", pid, members[0].batch_id, members[0].row0 + i, blob, observed))
        elif i in group.joined:
            outcomes.append((label.label_id, "duplicate", pid, members[0].batch_id, members[0].row0 + i, blob,
                             observed))
        else:
            group.joined[i] = label.label_id
            outcomes += [(label.label_id, "joined", pid, m.batch_id, m.row0 + i, blob, observed) for m in members]
            self.joined += len(members)
        self.known.add(label.label_id)
        group.label_ids.append(label.label_id)
        return True

    def _hold(self, item: _Pending) -> None:
        label = item.label
        self.known.add(label.label_id)
        self.pending[label.label_id] = item
        if label.prediction_id is not None:
            self.pending_by_pid.setdefault(label.prediction_id, []).append(label.label_id)
            split = _split(label.prediction_id)
            if split is not None:
                self.pending_by_key.setdefault(split[0], set()).add(label.label_id)
        else:
            assert label.model is not None and label.entity is not None
            self.pending_by_entity.setdefault((label.model, label.entity), []).append(label.label_id)

    def _release(self, item: _Pending) -> None:
        label = item.label
        del self.pending[label.label_id]
        if label.prediction_id is not None:
            _discard(self.pending_by_pid, label.prediction_id, label.label_id)
            split = _split(label.prediction_id)
            if split is not None:
                _discard(self.pending_by_key, split[0], label.label_id)
        else:
            _discard(self.pending_by_entity, (label.model, label.entity), label.label_id)


_SCALARS = frozenset((bool, int, float, str))
_NONE: dict[str, Any] = {}


def _blob(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _discard(table: dict[Any, Any], key: Any, label_id: str) -> None:
    held = table.get(key)
    if held is not None:
        held.remove(label_id) if isinstance(held, list) else held.discard(label_id)
        if not held:
            del table[key]


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


def _write(db: sqlite3.Connection, outcomes: list[tuple[Any, ...]]) -> None:
    """The write's settled labels, (label id, state, prediction id, batch id, row, label JSON, observed at)
    each, packed into one `settled` row per batch and state."""
    runs: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
    for o in outcomes:
        run = runs.get((o[3], o[1]))
        if run is None:
            runs[(o[3], o[1])] = [o]
        else:
            run.append(o)
    packed = []
    for (batch_id, state), run in runs.items():
        pids = [o[2] for o in run]
        packed.append((batch_id, state, len(run), orjson.dumps([o[4] for o in run]), orjson.dumps([o[0] for o in run]),
                       orjson.dumps(pids) if any(p is not None for p in pids) else None,
                       b"[" + b",".join([o[5] for o in run]) + b"]", orjson.dumps([o[6] for o in run])))
    db.executemany("INSERT INTO settled VALUES (?, ?, ?, ?, ?, ?, ?, ?)", packed)


def _stored(db: sqlite3.Connection, batch_id: int, row: int, label_id: str) -> tuple[Any, ...] | None:
    """The settled label `label_id` on `row` of stored batch `batch_id`, as `_write` takes it; None if none."""
    for state, rows, label_ids, pids, labels, observed in db.execute(
            "SELECT state, rows, label_ids, prediction_ids, labels, observed_at FROM settled WHERE batch_id = ?",
            (batch_id,)):
        for k, (r, lid) in enumerate(zip(orjson.loads(rows), orjson.loads(label_ids), strict=True)):
            if r == row and lid == label_id:
                return (lid, state, orjson.loads(pids)[k] if pids else None, batch_id, r,
                        _blob(orjson.loads(labels)[k]), orjson.loads(observed)[k])
    return None


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


def live_quality(rows: Sequence[JoinedPrediction], metrics: Sequence[str]) -> LiveQuality:
    """The named `metrics` of joined rows, by the same functions that score a holdout (`ctloop.metrics`).

    A prediction that is a mapping of class to probability gives the probability metrics (roc_auc, pr_auc,
    log_loss) and its most likely class for the others; a plain prediction is the predicted label, or the
    value when every metric asked for is a regression metric. Metrics the rows cannot give are absent."""
    import numpy as np

    wanted = tuple(metrics)
    if not rows or not wanted:
        return LiveQuality(len(rows), {})
    if all(m in REGRESSION_METRICS for m in wanted):
        values = [(float(r.label), float(r.prediction)) for r in rows if _numeric(r.label) and _numeric(r.prediction)]
        if not values:
            return LiveQuality(len(rows), {})
        y, pred = np.array(values, dtype=np.float64).T
        scored = regression_metrics(y, pred)
    else:
        y_keys = np.array([label_key(r.label) for r in rows], dtype=object)
        probabilities = [r.prediction for r in rows]
        if all(isinstance(p, dict) and p for p in probabilities):
            classes = tuple(sorted({label_key(c) for p in probabilities for c in p}, key=_class_order))
            proba = np.array([[float(_by_key(p).get(c, 0.0)) for c in classes] for p in probabilities])
            pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
            scored = classification_metrics(y_keys, pred, classes, proba)
        else:
            pred = np.array([label_key(p) for p in probabilities], dtype=object)
            classes = tuple(sorted(set(y_keys) | set(pred), key=_class_order))
            scored = classification_metrics(y_keys, pred, classes)
    return LiveQuality(len(rows), {m: scored[m] for m in wanted if m in scored and math.isfinite(scored[m])})


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _by_key(probabilities: dict[Any, Any]) -> dict[str, Any]:
    return {label_key(c): p for c, p in probabilities.items()}


def _class_order(key: str) -> tuple[int, float, str]:
    """Numeric classes in numeric order, so that "1" is the positive class of a 0/1 model, as in training."""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)

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

Idempotency: a prediction row is identified by (prediction id, role) and a label by its event id, so a
re-delivered message is stored once; a prediction joins at most one label (later ones are counted as
duplicates). Everything a poll brings is written in one transaction, which the joiner commits before it
commits the consumer offsets.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ctloop.failures import Refused
from ctloop.metrics import classification_metrics, label_key, regression_metrics
from ctloop.modelspec import REGRESSION_METRICS
from ctloop.predictions import PredictionBatch
from ctloop.sqlite import connect

CHAMPION = "champion"
SHADOW = "shadow"


@dataclass(frozen=True)
class JoinedPrediction:
    """A served prediction and the label observed for it. `prediction` is what serving returned for the row:
    a label or value, or a mapping of class to probability."""

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
        entities = ([None if (value := row.get(key)) is None else label_key(value) for row in batch.rows]
                    if key is not None else [None] * len(batch.rows))
        served_at = batch.ts if batch.ts.tzinfo else batch.ts.replace(tzinfo=UTC)
        return cls(batch.model, batch.version, batch.role or CHAMPION, served_at, ids, entities,
                   batch.to_bytes() if body is None else body)


@dataclass(frozen=True)
class Label:
    """One label event as the store keeps it (`label_id` is the event's id)."""

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
    # Append-only: a batch's JSON as served, once, and one thin row per served prediction pointing into it, so
    # a poll writes no per-row copy of features or predictions; they are read back for joined rows only.
    "CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS served (prediction_id TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,"
    " version TEXT, entity TEXT, served_at REAL NOT NULL, batch_id INTEGER NOT NULL, row INTEGER NOT NULL,"
    " PRIMARY KEY (prediction_id, role)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS served_entity ON served (model, entity, served_at) WHERE entity IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS labels (label_id TEXT PRIMARY KEY, prediction_id TEXT, model TEXT, entity TEXT,"
    " label BLOB NOT NULL, observed_at REAL NOT NULL, state TEXT NOT NULL, matched_id TEXT)",
    # Only pending labels are looked for again, and few are pending at a time: a partial index stays small.
    "CREATE INDEX IF NOT EXISTS labels_pending ON labels (prediction_id) WHERE state = 'pending'",
    "CREATE TABLE IF NOT EXISTS joined (prediction_id TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,"
    " version TEXT, served_at REAL NOT NULL, label BLOB NOT NULL, observed_at REAL NOT NULL, label_id TEXT NOT NULL,"
    " batch_id INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (prediction_id, role)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS joined_version ON joined (model, version, served_at)",
    "CREATE TABLE IF NOT EXISTS episodes (model TEXT NOT NULL, version TEXT NOT NULL, metric TEXT NOT NULL,"
    " number INTEGER NOT NULL, degraded INTEGER NOT NULL, PRIMARY KEY (model, version, metric))",
)

_JOINED_COLUMNS = "prediction_id, model, version, role, label, served_at, observed_at, batch_id, row"


class OutcomeStore:
    """Predictions, labels and their join, durable in SQLite (one file; WAL, so readers run beside the joiner)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_of(url)
        self._db = connect(self.path)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'predictions'").fetchone():
                raise OutcomeStoreError(f"{self.path} was written by an earlier ctloop (one row per prediction): "
                                        "move it aside (a new store holds what arrives from then on)")
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
            raise
        self._db.execute("COMMIT")

    def add(self, batches: Iterable[ServedBatch], labels: Iterable[Label], *, horizon_s: float) -> None:
        """Store served batches and labels (each once, however often delivered) and join what now matches, in
        one transaction. A label observed more than `horizon_s` after its prediction was served is kept as late."""
        with self.transaction() as db:
            self.add_in(db, batches, labels, horizon_s=horizon_s)

    def add_in(self, db: sqlite3.Connection, batches: Iterable[ServedBatch], labels: Iterable[Label], *,
               horizon_s: float) -> None:
        """`add` inside the caller's `transaction()`, so that more can be written with it."""
        new_ids = orjson.dumps(self._add_served(db, batches))
        # A row of another role (a shadow's) arriving after its request's label was joined joins it too.
        db.execute("INSERT OR IGNORE INTO joined SELECT s.prediction_id, s.role, s.model, s.version, s.served_at,"
                   " j.label, j.observed_at, j.label_id, s.batch_id, s.row FROM joined j"
                   " JOIN served s ON s.prediction_id = j.prediction_id"
                   " WHERE j.prediction_id IN (SELECT value FROM json_each(?))", (new_ids,))
        # Labels settle in arrival order: those pending from earlier polls (their prediction came now, or they
        # name an entity), then this poll's. Each is a row of the labels table, its state set as it settles.
        waiting = [list(row[1:]) for row in db.execute(
            f"SELECT rowid, {_LABEL_COLUMNS} FROM labels WHERE state = 'pending' AND prediction_id IN"
            f" (SELECT value FROM json_each(?)) UNION ALL SELECT rowid, {_LABEL_COLUMNS} FROM labels"
            " WHERE state = 'pending' AND prediction_id IS NULL ORDER BY 1", (new_ids,))]
        dumps, numpy = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        fresh = [[lb.label_id, lb.prediction_id, lb.model, lb.entity, dumps(lb.label, option=numpy),
                  lb.observed_at.timestamp(), "pending", None] for lb in _new_labels(db, labels)]
        for row in waiting + fresh:
            if row[_PREDICTION] is None:
                # A label by entity key names the newest champion prediction of that entity served before it.
                found = db.execute("SELECT prediction_id FROM served WHERE model = ? AND entity = ? AND role = ?"
                                   " AND served_at <= ? ORDER BY served_at DESC LIMIT 1",
                                   (row[2], row[3], CHAMPION, row[5])).fetchone()
                row[_PREDICTION] = found[0] if found else None
        joins = _settle(db, waiting + fresh, horizon_s)
        db.executemany(f"INSERT INTO labels ({_LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", fresh)
        db.executemany("UPDATE labels SET prediction_id = ?, state = ?, matched_id = ? WHERE label_id = ?",
                       [(row[_PREDICTION], row[_STATE], row[_MATCHED], row[0]) for row in waiting
                        if row[_PREDICTION] is not None])
        if joins:
            db.execute("INSERT OR IGNORE INTO joined SELECT s.prediction_id, s.role, s.model, s.version, s.served_at,"
                       " l.label, l.observed_at, l.label_id, s.batch_id, s.row FROM json_each(?) p"
                       " JOIN served s ON s.prediction_id = p.value ->> 0 JOIN labels l ON l.label_id = p.value ->> 1",
                       (orjson.dumps(joins),))

    @staticmethod
    def _add_served(db: sqlite3.Connection, batches: Iterable[ServedBatch]) -> list[str]:
        """Append the batches not stored yet; returns the ids of their rows."""
        served: list[tuple[Any, ...]] = []
        for b in batches:
            if not b.ids or db.execute("SELECT 1 FROM served WHERE prediction_id = ? AND role = ?",
                                       (b.ids[0], b.role)).fetchone():
                continue  # a redelivered batch: its rows are stored already
            batch_id = db.execute("INSERT INTO batches (body) VALUES (?)", (b.body,)).lastrowid
            ts = b.served_at.timestamp()
            served += [(pid, b.role, b.model, b.version, entity, ts, batch_id, i)
                       for i, (pid, entity) in enumerate(zip(b.ids, b.entities, strict=True))]
        db.executemany("INSERT OR IGNORE INTO served VALUES (?, ?, ?, ?, ?, ?, ?, ?)", served)
        return [row[0] for row in served]

    def joined(self, model: str, version: str | None, *, since: datetime, until: datetime | None = None,
               role: str | None = None) -> list[JoinedPrediction]:
        """Joined rows of `model` `version` (None: every version) served in [since, until), oldest first."""
        sql = f"SELECT {_JOINED_COLUMNS} FROM joined WHERE model = ? AND served_at >= ?"
        args: list[Any] = [model, since.timestamp()]
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        if until is not None:
            sql += " AND served_at < ?"
            args.append(until.timestamp())
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        rows = self._db.execute(sql + " ORDER BY served_at, prediction_id, role", args).fetchall()
        wanted = orjson.dumps(sorted({row[7] for row in rows}))
        bodies = {batch_id: _load_body(body) for batch_id, body in self._db.execute(
            "SELECT batch_id, body FROM batches WHERE batch_id IN (SELECT value FROM json_each(?))", (wanted,))}
        return [_joined(row, bodies[row[7]]) for row in rows]

    def versions(self, model: str, *, since: datetime, role: str | None = CHAMPION) -> list[str]:
        """The versions of `model` with joined rows served since `since`."""
        sql = "SELECT DISTINCT version FROM joined WHERE model = ? AND served_at >= ? AND version IS NOT NULL"
        args: list[Any] = [model, since.timestamp()]
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        return sorted((r[0] for r in self._db.execute(sql, args)), key=_version_order)

    def latest_version(self, model: str, *, since: datetime, role: str | None = CHAMPION) -> str | None:
        """The version of the most recently served joined row of `model` (in `role`) since `since`."""
        sql = "SELECT version FROM joined WHERE model = ? AND served_at >= ? AND version IS NOT NULL"
        args: list[Any] = [model, since.timestamp()]
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        found = self._db.execute(sql + " ORDER BY served_at DESC LIMIT 1", args).fetchone()
        return found[0] if found else None

    def joined_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM joined").fetchone()[0])

    def counts(self, model: str | None = None) -> JoinCounts:
        where, args = ("WHERE model = ?", (model,)) if model else ("", ())
        predictions = self._db.execute(f"SELECT COUNT(*) FROM served {where}", args).fetchone()[0]
        joined = self._db.execute(f"SELECT COUNT(*) FROM joined {where}", args).fetchone()[0]
        states = dict.fromkeys(("pending", "late", "duplicate"), 0)
        # A label known by id has no model of its own; it counts under its prediction's.
        label_sql = ("SELECT l.state, COUNT(*) FROM labels l LEFT JOIN (SELECT DISTINCT prediction_id, model FROM"
                     " served) p ON p.prediction_id = COALESCE(l.matched_id, l.prediction_id)"
                     + (" WHERE COALESCE(p.model, l.model) = ?" if model else "") + " GROUP BY l.state")
        for state, n in self._db.execute(label_sql, args):
            states[state] = n
        return JoinCounts(predictions, joined, states["pending"], states["late"], states["duplicate"])

    def label_states(self) -> dict[str, str]:
        """Every label's state by its id: what tests and operators check for loss and double counting."""
        return dict(self._db.execute("SELECT label_id, state FROM labels"))

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


_LABEL_COLUMNS = "label_id, prediction_id, model, entity, label, observed_at, state, matched_id"
_PREDICTION, _STATE, _MATCHED = 1, 6, 7


def _new_labels(db: sqlite3.Connection, labels: Iterable[Label]) -> list[Label]:
    """The labels not stored yet, each once (a redelivery repeats event ids)."""
    by_id: dict[str, Label] = {}
    for label in labels:
        by_id.setdefault(label.label_id, label)
    if not by_id:
        return []
    known = {row[0] for row in db.execute("SELECT label_id FROM labels WHERE label_id IN"
                                          " (SELECT value FROM json_each(?))", (orjson.dumps(list(by_id)),))}
    return [label for label_id, label in by_id.items() if label_id not in known]


def _settle(db: sqlite3.Connection, labels: Sequence[list[Any]], horizon_s: float) -> list[tuple[str, str]]:
    """Give each label row its state, in order; returns the (prediction id, label id) pairs that join. A label
    whose prediction is stored is late past the horizon; else the first for a prediction without a label
    joins it and later ones are duplicates. The others stay pending."""
    named = orjson.dumps(sorted({row[_PREDICTION] for row in labels if row[_PREDICTION] is not None}))
    if named == b"[]":
        return []
    first_served = dict(db.execute("SELECT prediction_id, MIN(served_at) FROM served WHERE prediction_id IN"
                                   " (SELECT value FROM json_each(?)) GROUP BY prediction_id", (named,)))
    labelled = {row[0] for row in db.execute("SELECT DISTINCT prediction_id FROM joined WHERE prediction_id IN"
                                             " (SELECT value FROM json_each(?))", (named,))}
    joins: list[tuple[str, str]] = []
    for row in labels:
        prediction_id = row[_PREDICTION]
        served_at = first_served.get(prediction_id)
        if served_at is None:
            continue
        row[_MATCHED] = prediction_id
        if row[5] - served_at > horizon_s:
            row[_STATE] = "late"
        elif prediction_id in labelled:
            row[_STATE] = "duplicate"
        else:
            row[_STATE] = "joined"
            labelled.add(prediction_id)
            joins.append((prediction_id, row[0]))
    return joins


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


def _joined(row: tuple[Any, ...], body: dict[str, Any]) -> JoinedPrediction:
    pid, model, version, role, label, served_at, observed_at, _, index = row
    return JoinedPrediction(pid, model, version, role, body["rows"][index], body["predictions"][index],
                            orjson.loads(label), _when(served_at), _when(observed_at))


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

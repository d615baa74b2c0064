"""Outcomes: served predictions joined to the labels that arrive later, and live quality computed on them.

Public, for the joiner, the quality monitor and the bake window:
- `JoinedPrediction`: one served prediction with its label;
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
class ServedRow:
    """One row of a prediction batch as the store keeps it; `entity` is the row's key value, if any."""

    prediction_id: str
    role: str
    model: str
    version: str | None
    entity: str | None
    features: dict[str, Any]
    prediction: Any
    served_at: datetime


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
    "CREATE TABLE IF NOT EXISTS predictions (prediction_id TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,"
    " version TEXT, entity TEXT, features BLOB NOT NULL, prediction BLOB NOT NULL, served_at REAL NOT NULL,"
    " PRIMARY KEY (prediction_id, role))",
    "CREATE INDEX IF NOT EXISTS predictions_entity ON predictions (model, entity, served_at)",
    "CREATE TABLE IF NOT EXISTS labels (label_id TEXT PRIMARY KEY, prediction_id TEXT, model TEXT, entity TEXT,"
    " label BLOB NOT NULL, observed_at REAL NOT NULL, state TEXT NOT NULL, matched_id TEXT)",
    "CREATE INDEX IF NOT EXISTS labels_state ON labels (state)",
    "CREATE INDEX IF NOT EXISTS labels_matched ON labels (matched_id)",
    # A joined row points at its served row (the features and prediction stay there) and copies its label.
    "CREATE TABLE IF NOT EXISTS joined (prediction_id TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,"
    " version TEXT, served_at REAL NOT NULL, label BLOB NOT NULL, observed_at REAL NOT NULL, label_id TEXT NOT NULL,"
    " PRIMARY KEY (prediction_id, role))",
    "CREATE INDEX IF NOT EXISTS joined_version ON joined (model, version, served_at)",
    "CREATE TABLE IF NOT EXISTS episodes (model TEXT NOT NULL, version TEXT NOT NULL, metric TEXT NOT NULL,"
    " number INTEGER NOT NULL, degraded INTEGER NOT NULL, PRIMARY KEY (model, version, metric))",
)

_JOINED_COLUMNS = ("j.prediction_id, j.model, j.version, j.role, p.features, p.prediction, j.label, j.served_at,"
                   " j.observed_at")
_JOIN = ("SELECT p.prediction_id, p.role, p.model, p.version, p.served_at, l.label, l.observed_at, l.label_id")


class OutcomeStore:
    """Predictions, labels and their join, durable in SQLite (one file; WAL, so readers run beside the joiner)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_of(url)
        self._db = connect(self.path)
        with self.transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)

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

    def add(self, rows: Iterable[ServedRow], labels: Iterable[Label], *, horizon_s: float) -> None:
        """Store served rows and labels (each once, however often delivered) and join what now matches, in one
        transaction. A label observed more than `horizon_s` after its prediction was served is kept as late."""
        with self.transaction() as db:
            self.add_in(db, rows, labels, horizon_s=horizon_s)

    def add_in(self, db: sqlite3.Connection, rows: Iterable[ServedRow], labels: Iterable[Label], *,
               horizon_s: float) -> None:
        """`add` inside the caller's `transaction()`, so that more can be written with it."""
        dumps = orjson.dumps
        served = [(r.prediction_id, r.role, r.model, r.version, r.entity, dumps(r.features), _dumps(r.prediction),
                   r.served_at.timestamp()) for r in rows]
        db.executemany("INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", served)
        db.executemany("INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, 'pending', NULL)",
                       [(lb.label_id, lb.prediction_id, lb.model, lb.entity, _dumps(lb.label),
                         lb.observed_at.timestamp()) for lb in labels])
        self._match_pending(db, horizon_s)
        if served:
            # A row of another role (a shadow's) arriving after its request's label was joined joins it too.
            ids = dumps([r[0] for r in served])
            db.execute(
                f"INSERT OR IGNORE INTO joined {_JOIN} FROM predictions p"
                " JOIN labels l ON l.matched_id = p.prediction_id AND l.state = 'joined'"
                " WHERE p.prediction_id IN (SELECT value FROM json_each(?))", (ids,))

    def _match_pending(self, db: sqlite3.Connection, horizon_s: float) -> None:
        # A label by entity key first names the newest champion prediction of that entity served before it.
        by_entity = db.execute("SELECT label_id, model, entity, observed_at FROM labels WHERE state = 'pending'"
                               " AND prediction_id IS NULL ORDER BY rowid").fetchall()
        for label_id, model, entity, observed_at in by_entity:
            found = db.execute("SELECT prediction_id FROM predictions WHERE model = ? AND entity = ? AND role = ?"
                               " AND served_at <= ? ORDER BY served_at DESC LIMIT 1",
                               (model, entity, CHAMPION, observed_at)).fetchone()
            if found is not None:
                db.execute("UPDATE labels SET prediction_id = ? WHERE label_id = ?", (found[0], label_id))
        # Set-wise, for the pending labels whose prediction is stored: past the horizon they are late; else the
        # first of each prediction joins it, unless it has a label already, and the others are duplicates.
        db.execute("CREATE TEMP TABLE IF NOT EXISTS ready (label_id TEXT PRIMARY KEY, prediction_id TEXT,"
                   " served_at REAL, observed_at REAL, seq INTEGER)")
        db.execute("CREATE INDEX IF NOT EXISTS temp.ready_prediction ON ready (prediction_id, seq)")
        db.execute("DELETE FROM ready")
        db.execute("INSERT INTO ready SELECT * FROM (SELECT l.label_id, l.prediction_id, (SELECT MIN(p.served_at)"
                   " FROM predictions p WHERE p.prediction_id = l.prediction_id) AS served, l.observed_at, l.rowid"
                   " FROM labels l WHERE l.state = 'pending' AND l.prediction_id IS NOT NULL) WHERE served IS NOT NULL")
        db.execute("UPDATE labels SET state = 'late', matched_id = prediction_id WHERE label_id IN"
                   " (SELECT label_id FROM ready WHERE observed_at - served_at > ?)", (horizon_s,))
        db.execute("DELETE FROM ready WHERE observed_at - served_at > ?", (horizon_s,))
        db.execute(
            f"INSERT OR IGNORE INTO joined {_JOIN} FROM ready r"
            " JOIN labels l ON l.label_id = r.label_id JOIN predictions p ON p.prediction_id = r.prediction_id"
            " WHERE r.seq = (SELECT MIN(r2.seq) FROM ready r2 WHERE r2.prediction_id = r.prediction_id)"
            " AND NOT EXISTS (SELECT 1 FROM joined j WHERE j.prediction_id = r.prediction_id)")
        db.execute("UPDATE labels SET matched_id = prediction_id, state = CASE WHEN EXISTS (SELECT 1 FROM joined j"
                   " WHERE j.prediction_id = labels.prediction_id AND j.label_id = labels.label_id) THEN 'joined'"
                   " ELSE 'duplicate' END WHERE label_id IN (SELECT label_id FROM ready)")

    def joined(self, model: str, version: str | None, *, since: datetime, until: datetime | None = None,
               role: str | None = None) -> list[JoinedPrediction]:
        """Joined rows of `model` `version` (None: every version) served in [since, until), oldest first."""
        sql = (f"SELECT {_JOINED_COLUMNS} FROM joined j JOIN predictions p ON p.prediction_id = j.prediction_id"
               " AND p.role = j.role WHERE j.model = ? AND j.served_at >= ?")
        args: list[Any] = [model, since.timestamp()]
        if version is not None:
            sql += " AND j.version = ?"
            args.append(version)
        if until is not None:
            sql += " AND j.served_at < ?"
            args.append(until.timestamp())
        if role is not None:
            sql += " AND j.role = ?"
            args.append(role)
        rows = self._db.execute(sql + " ORDER BY j.served_at, j.prediction_id, j.role", args).fetchall()
        return [_joined(row) for row in rows]

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
        predictions = self._db.execute(f"SELECT COUNT(*) FROM predictions {where}", args).fetchone()[0]
        joined = self._db.execute(f"SELECT COUNT(*) FROM joined {where}", args).fetchone()[0]
        states = dict.fromkeys(("pending", "late", "duplicate"), 0)
        # A label known by id has no model of its own; it counts under its prediction's.
        label_sql = ("SELECT l.state, COUNT(*) FROM labels l LEFT JOIN (SELECT DISTINCT prediction_id, model FROM"
                     " predictions) p ON p.prediction_id = COALESCE(l.matched_id, l.prediction_id)"
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


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _joined(row: tuple[Any, ...]) -> JoinedPrediction:
    pid, model, version, role, features, prediction, label, served_at, observed_at = row
    return JoinedPrediction(pid, model, version, role, orjson.loads(features), orjson.loads(prediction),
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

"""The gateway's shared record: each model's admission state, every decision, events seen, keys that ran,
and which replica owns each admission partition. SQLAlchemy Core over a URL: SQLite for one machine and
tests, PostgreSQL in the cluster (no single SQLite writer there).

Every write is one transaction that first checks the writer still owns the partitions it writes for
(`Fenced` otherwise): a replica that lost a partition in a rebalance, even one that does not know it yet,
cannot overwrite what the partition's new owner decided. GPU runs are counted over every model, so the
cap holds across replicas; a transaction that may start a GPU run takes the store-wide GPU lock first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ctloop.sensors.admission import AdmissionState, Candidate, Decision

metadata = sa.MetaData()

partitions = sa.Table(
    "gateway_partitions", metadata,
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
)
models = sa.Table(
    "gateway_models", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("partition", sa.Integer, nullable=False, index=True),
    sa.Column("gpu_running", sa.Boolean, nullable=False, default=False),
    sa.Column("state", sa.Text, nullable=False),
)
events = sa.Table(
    "gateway_events", metadata,
    sa.Column("event_id", sa.String(400), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    # The request's digest when first decided (`request.Request.digest`); null in stores from before it was kept.
    sa.Column("digest", sa.String(64)),
)
decisions = sa.Table(
    "gateway_decisions", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("replica", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(400), nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(400)),
)
runs = sa.Table(
    "gateway_runs", metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(400), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)
dead_letters = sa.Table(
    "gateway_dead_letters", metadata,
    sa.Column("topic", sa.String(250), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("sent", sa.Boolean, nullable=False),
    sa.Column("replica", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)
locks = sa.Table(
    "gateway_locks", metadata,
    sa.Column("name", sa.String(50), primary_key=True),
)
GPU_LOCK = "gpu"


class Fenced(RuntimeError):
    """This replica no longer owns a partition it tried to write for: a rebalance moved it."""


@dataclass(frozen=True)
class DecisionRow:
    seq: int
    at: float
    replica: str
    event_id: str
    model: str
    kind: str
    reason: str
    key: str
    run_id: str | None


def open_engine(url: str) -> Engine:
    """An engine for `url`; SQLite transactions take the write lock at BEGIN, as PostgreSQL's row locks do."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class GatewayStore:
    """One replica's handle on the shared store."""

    def __init__(self, url: str, replica: str) -> None:
        self.url = url
        self.replica = replica
        self.engine = open_engine(url)
        self._postgres = self.engine.dialect.name == "postgresql"
        with self.engine.begin() as db:
            metadata.create_all(db)
            _add_digest_column(db)
            if db.execute(sa.select(locks.c.name).where(locks.c.name == GPU_LOCK)).first() is None:
                db.execute(locks.insert().values(name=GPU_LOCK))
        self._epochs: dict[int, int] = {}

    def close(self) -> None:
        self.engine.dispose()

    # --- ownership ---------------------------------------------------------------------------------

    def claim(self, owned: Collection[int]) -> tuple[AdmissionState, dict[str, int]]:
        """Take `owned` partitions (a new epoch each, fencing their previous owner) and load the admission
        state of every model they hold, with each model's partition."""
        with self.engine.begin() as db:
            for partition in sorted(owned):
                row = db.execute(sa.select(partitions.c.epoch).where(partitions.c.partition == partition)
                                 .with_for_update()).first()
                epoch = (row[0] if row else 0) + 1
                if row is None:
                    db.execute(partitions.insert().values(partition=partition, epoch=epoch, owner=self.replica))
                else:
                    db.execute(partitions.update().where(partitions.c.partition == partition)
                               .values(epoch=epoch, owner=self.replica))
                self._epochs[partition] = epoch
            rows = db.execute(sa.select(models.c.model, models.c.partition, models.c.state)
                              .where(models.c.partition.in_(sorted(owned)))).all() if owned else []
        return merge(json.loads(state) for _, _, state in rows), {model: p for model, p, _ in rows}

    def release(self, partitions_: Iterable[int]) -> None:
        for partition in partitions_:
            self._epochs.pop(partition, None)

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self._epochs)

    @contextmanager
    def transaction(self, *, gpu: bool = False) -> Iterator[Writer]:
        """One atomic write. `gpu=True` serializes it with every other replica's GPU decisions (see
        `Writer.foreign_gpu_runs`); the writer must `fence` the partitions it writes for."""
        with self.engine.begin() as db:
            if gpu:
                db.execute(sa.select(locks.c.name).where(locks.c.name == GPU_LOCK).with_for_update())
            yield Writer(db, self.replica, self._epochs)

    # --- reads -------------------------------------------------------------------------------------

    def seen(self, event_ids: Collection[str]) -> dict[str, str]:
        """The request digest each of these events had when decided ("" if not kept); undecided ones are absent."""
        if not event_ids:
            return {}
        with self.engine.connect() as db:
            query = sa.select(events.c.event_id, events.c.digest).where(events.c.event_id.in_(event_ids))
            return {event_id: digest or "" for event_id, digest in db.execute(query)}

    def ran(self, keys: Collection[str]) -> set[str]:
        if not keys:
            return set()
        with self.engine.connect() as db:
            return {r[0] for r in db.execute(sa.select(runs.c.key).where(runs.c.key.in_(keys)))}

    def owners(self) -> dict[int, str]:
        """Each admission partition's last claimant (the replica deciding it, unless it died since)."""
        with self.engine.connect() as db:
            return dict(db.execute(sa.select(partitions.c.partition, partitions.c.owner)).all())

    def decisions(self, *, model: str | None = None, event_id: str | None = None) -> list[DecisionRow]:
        """Every decision, oldest first, optionally for one model or one event."""
        query = _decisions_where(sa.select(decisions).order_by(decisions.c.seq), model, event_id)
        with self.engine.connect() as db:
            return [DecisionRow(**row._mapping) for row in db.execute(query)]


def list_decisions(url: str, *, model: str | None = None, event_id: str | None = None,
                   limit: int = 50) -> list[DecisionRow]:
    """The newest `limit` decisions in the store at `url`, newest first; read only, so a store never written
    (no SQLite file, or no tables yet) has none and is not created."""
    location = sa.engine.make_url(url)
    if location.get_backend_name() == "sqlite" and not (location.database and Path(location.database).is_file()):
        return []
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            if not sa.inspect(db).has_table(decisions.name):
                return []
            query = sa.select(decisions).order_by(decisions.c.seq.desc()).limit(limit)
            return [DecisionRow(**row._mapping) for row in db.execute(_decisions_where(query, model, event_id))]
    finally:
        engine.dispose()


def _decisions_where(query: sa.Select, model: str | None, event_id: str | None) -> sa.Select:
    if model is not None:
        query = query.where(decisions.c.model == model)
    if event_id is not None:
        query = query.where(decisions.c.event_id == event_id)
    return query


class Writer:
    """What one transaction may write."""

    def __init__(self, db: Connection, replica: str, epochs: dict[int, int]) -> None:
        self.db = db
        self.replica = replica
        self._epochs = epochs

    def fence(self, touched: Collection[int]) -> None:
        """Lock the partitions' rows until commit; `Fenced` (and they are forgotten) when one moved to
        another replica since this one claimed it."""
        if not touched:
            return
        rows = dict(self.db.execute(sa.select(partitions.c.partition, partitions.c.epoch)
                                    .where(partitions.c.partition.in_(sorted(touched))).with_for_update()).all())
        lost = sorted(p for p in touched if p not in self._epochs or rows.get(p) != self._epochs[p])
        if lost:
            for partition in lost:
                self._epochs.pop(partition, None)
            raise Fenced(f"partitions {lost} are owned by another replica now")

    def foreign_gpu_runs(self, own: Collection[str]) -> int:
        """GPU runs held by models this replica does not decide (read under the GPU lock)."""
        query = sa.select(models.c.model).where(models.c.gpu_running.is_(True))
        return sum(1 for (model,) in self.db.execute(query) if model not in own)

    def mark_seen(self, digests: Mapping[str, str], at: float) -> None:
        """Events now decided, by id, with their request digests."""
        ids = set(digests)
        if ids:
            ids -= {r[0] for r in self.db.execute(sa.select(events.c.event_id).where(events.c.event_id.in_(ids)))}
        if ids:
            self.db.execute(events.insert(), [{"event_id": e, "at": at, "digest": digests[e]} for e in sorted(ids)])

    def claim_dead_letter(self, origin: tuple[str, int, int], reason: str, at: float) -> bool:
        """Record `origin` as being dead-lettered; False when it was recorded before."""
        topic, partition, offset = origin
        where = (dead_letters.c.topic == topic) & (dead_letters.c.partition == partition) \
            & (dead_letters.c.offset == offset)
        if self.db.execute(sa.select(dead_letters.c.sent).where(where)).first() is not None:
            return False
        self.db.execute(dead_letters.insert().values(topic=topic, partition=partition, offset=offset, reason=reason,
                                                     sent=False, replica=self.replica, at=at))
        return True

    def record(self, made: Iterable[Decision], at: float) -> None:
        rows = [{"at": at, "replica": self.replica, "event_id": d.candidate.event_id, "model": d.candidate.model,
                 "kind": d.kind, "reason": d.reason, "key": d.candidate.key, "run_id": d.run_id} for d in made]
        if rows:
            self.db.execute(decisions.insert(), rows)

    def mark_ran(self, reserved: Iterable[Candidate], at: float) -> None:
        """Keys reserved for a run: a later candidate with one of them is deduped."""
        existing = set()
        rows = []
        for c in reserved:
            if c.key not in existing:
                existing.add(c.key)
                rows.append({"key": c.key, "model": c.model, "event_id": c.event_id, "at": at})
        if not rows:
            return
        held = {r[0] for r in self.db.execute(sa.select(runs.c.key).where(runs.c.key.in_(existing)))}
        rows = [r for r in rows if r["key"] not in held]
        if rows:
            self.db.execute(runs.insert(), rows)

    def save(self, changed: Mapping[str, tuple[int, dict[str, Any] | None]]) -> None:
        """Each changed model's state (None: nothing left to remember, the row goes); two statements."""
        if not changed:
            return
        self.db.execute(models.delete().where(models.c.model.in_(sorted(changed))))
        rows = [{"model": model, "partition": partition, "state": json.dumps(state),
                 "gpu_running": bool(state.get("running") and state["running"]["candidate"].get("gpu"))}
                for model, (partition, state) in changed.items() if state is not None]
        if rows:
            self.db.execute(models.insert(), rows)


class DeadLetterRows:
    """The gateway's `ctloop.deadletter.DeadLetterRecord`: origins dead-lettered, in the shared store, so that
    whichever replica gets a message again knows it was copied. A claim is fenced by the origin's partition,
    and a replica resolves only the pending records of the partitions it owns. The fence does not cover the
    publish that follows a claim: a replica that lost the partition unnoticed may still publish its copy after
    the new owner forgot the pending record, so a handover can copy a message twice (docs/cluster.md)."""

    def __init__(self, store: GatewayStore, topic: str, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.topic = topic
        self.clock = clock

    def claim(self, origin: tuple[str, int, int], reason: str) -> bool:
        with self.store.transaction() as writer:
            if origin[0] == self.topic:
                writer.fence({origin[1]})
            return writer.claim_dead_letter(origin, reason, self.clock())

    def mark_sent(self, origin: tuple[str, int, int]) -> None:
        self.resolve([origin], ())

    def pending(self) -> list[tuple[str, int, int]]:
        owned = sorted(self.store.owned)
        if not owned:
            return []
        query = sa.select(dead_letters.c.topic, dead_letters.c.partition, dead_letters.c.offset).where(
            dead_letters.c.sent.is_(False), dead_letters.c.topic == self.topic, dead_letters.c.partition.in_(owned))
        with self.store.engine.connect() as db:
            return [tuple(row) for row in db.execute(query)]

    def resolve(self, sent: Collection[tuple[str, int, int]], forgotten: Collection[tuple[str, int, int]]) -> None:
        with self.store.engine.begin() as db:
            for origin, action in [*((o, dead_letters.update().values(sent=True)) for o in sent),
                                   *((o, dead_letters.delete()) for o in forgotten)]:
                topic, partition, offset = origin
                db.execute(action.where(dead_letters.c.topic == topic, dead_letters.c.partition == partition,
                                        dead_letters.c.offset == offset))

    def close(self) -> None:
        """Nothing of its own: the store is the gateway's to close."""


def _add_digest_column(db: Connection) -> None:
    """Bring a store made before request digests were kept up to date (a no-op on a current one)."""
    if "digest" in {c["name"] for c in sa.inspect(db).get_columns(events.name)}:
        return
    exists = " IF NOT EXISTS" if db.dialect.name == "postgresql" else ""  # replicas starting together
    db.exec_driver_sql(f"ALTER TABLE {events.name} ADD COLUMN{exists} digest VARCHAR(64)")


def part(state: AdmissionState, model: str) -> dict[str, Any] | None:
    """The model's part of `state` as JSON, or None when the model has nothing in it."""
    out: dict[str, Any] = {"model": model}
    if model in state.windows:
        out["window"] = msgspec.to_builtins(state.windows[model])
    if model in state.queued:
        out["queued"] = msgspec.to_builtins(state.queued[model])
    if model in state.running:
        out["running"] = msgspec.to_builtins(state.running[model])
    if model in state.last_drift_at:
        out["last_drift_at"] = state.last_drift_at[model]
    return out if len(out) > 1 else None


def changed_models(before: AdmissionState, after: AdmissionState) -> set[str]:
    """Models whose part differs. Admission replaces what it changes and keeps the rest, so identity
    tells, without serializing every model on every batch."""
    out: set[str] = set()
    for field in ("windows", "queued", "running", "last_drift_at"):
        old, new = getattr(before, field), getattr(after, field)
        if old is new:
            continue
        out.update(m for m in old.keys() | new.keys() if old.get(m) is not new.get(m) and old.get(m) != new.get(m))
    return out


def merge(parts: Iterable[Mapping[str, Any]]) -> AdmissionState:
    """The admission state of the models whose parts these are (the inverse of `split`)."""
    windows, queued, running, last = {}, {}, {}, {}
    for part in parts:
        model = part["model"]
        if "window" in part:
            windows[model] = part["window"]
        if "queued" in part:
            queued[model] = part["queued"]
        if "running" in part:
            running[model] = part["running"]
        if "last_drift_at" in part:
            last[model] = part["last_drift_at"]
    return AdmissionState.model_validate({"windows": windows, "queued": queued, "running": running,
                                          "last_drift_at": last})

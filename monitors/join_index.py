"""The outcome store's writer memory: recent served batches, the labels settled against them, the pending labels
and the champion's entity keys, joined in memory with the store's file behind it for what memory does not hold.

`outcomes.OutcomeStore` owns one and calls it inside its write transactions; nothing else should.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ctloop.monitors.outcome_records import CHAMPION, Label, ServedBatch, batch_key

_SCALARS = frozenset((bool, int, float, str))


_NONE: dict[str, Any] = {}


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


class JoinIndex:
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
            label = Label(label_id, None, datetime.fromtimestamp(observed, UTC), prediction_id=pid, model=model,
                          entity=entity)
            self._hold(_Pending(rowid, label, blob))

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


def _blob(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _discard(table: dict[Any, Any], key: Any, label_id: str) -> None:
    held = table.get(key)
    if held is not None:
        held.remove(label_id) if isinstance(held, list) else held.discard(label_id)
        if not held:
            del table[key]


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

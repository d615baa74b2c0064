"""Audit from the outside: what the MLflow registry and the bus hold, whatever the layers below did.

Counted from the registry: the versions registered per lineage key (model, data digest, code version)
read from each version's `ctloop.*` tags, and the alias moves (promote and rollback entries of each
model's audit trail). Counted from the bus: every event on the models topic by id, and every message in
the dead-letter topic, none de-duplicated. Optionally against the sensor's decision log: an automatic
move whose version's triggering event the sensor never triggered a run for is unexplained.

A duplicate is a second registered version for the same lineage key, or a second automatic move of the
same version of a model. An announcement may repeat (the outbox is at-least-once, same id each time),
but every committed move must be announced, and nothing that did not commit may be.

Shared by tests/reliability/test_crash_points.py and the full-template chaos bench.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ctloop.bus import Bus
from ctloop.deadletter import origin_of
from ctloop.deploy.registry import NotFound, Registry
from ctloop.events import ModelPromoted, ModelRolledBack, parse

ALIAS_MOVES = ("promote", "rollback")
MOVE_EVENTS = (ModelPromoted.event_type, ModelRolledBack.event_type)
Origin = tuple[str, int, int]
LineageKey = tuple[str, str, str]


@dataclass(frozen=True)
class Move:
    """One committed alias move, as the model's audit trail records it."""

    model: str
    txid: str
    action: str
    version: str
    from_version: str | None
    manual: bool

    @property
    def event_id(self) -> str:
        """The id its announcement must carry: derived from the move (`ctloop.deploy.outbox`)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctloop.move/{self.model}/{self.txid}"))


@dataclass(frozen=True)
class Expected:
    """What the workload must end as: the (model, data digest) pairs that must each hold a registered
    version, and the origins (topic, partition, offset) of the messages that must be dead-lettered."""

    registrations: frozenset[tuple[str, str]] = frozenset()
    bad_messages: frozenset[Origin] = frozenset()


@dataclass(frozen=True)
class Figures:
    expected_registrations: int
    lost: int  # expected (model, digest) pairs with no registered version
    versions: int
    duplicate_registrations: int  # versions beyond the first per lineage key
    alias_moves: int
    duplicate_alias_moves: int  # automatic moves beyond the first per (model, version)
    unannounced_alias_moves: int  # committed moves whose event id is not on the models topic
    phantom_announcements: int  # move announcements of no committed move
    announcements: int  # every message on the models topic, repeats included
    repeated_announcements: int  # copies beyond the first per id (allowed: at-least-once)
    unexplained_alias_moves: int  # automatic moves the sensor's decision log did not trigger
    bad_messages: int
    dead_letters: int  # every message in the dead-letter topic
    dead_lettered_not_once: int  # bad messages copied 0 or 2+ times, plus copies of messages not bad
    problems: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.problems


def lineage(registry: Registry, models: Iterable[str]) -> dict[LineageKey, list[str]]:
    """Versions per (model, data digest, code version), from the lineage tags of every version."""
    out: dict[LineageKey, list[str]] = {}
    for model in models:
        try:
            versions = registry.versions(model)
        except NotFound:
            continue
        for info in versions:
            key = (model, info.tags.get("ctloop.data_digest", ""), info.tags.get("ctloop.code_version", ""))
            out.setdefault(key, []).append(info.version)
    return out


def alias_moves(registry: Registry, models: Iterable[str]) -> list[Move]:
    """Every committed promote and rollback in the models' audit trails, oldest first per model."""
    moves = []
    for model in models:
        try:
            trail = registry.model(model).audit
        except NotFound:
            continue
        moves += [Move(model, str(e["id"]), e["action"], str(e["version"]), e.get("from_version"),
                       bool(e.get("manual"))) for e in trail if e.get("action") in ALIAS_MOVES]
    return moves


def announced(bus: Bus, topic: str, models: Iterable[str]) -> Counter[str]:
    """The id of every promotion and rollback announcement of these models on the topic, each with how
    many times it is there."""
    wanted = set(models)
    events = (parse(m.value) for m in bus.read_all(topic))
    return Counter(e.id for e in events if e.type in MOVE_EVENTS and getattr(e.data, "model", None) in wanted)


def announcement(bus: Bus, topic: str, event_id: str) -> str:
    """One announcement, in a line, for a problem report."""
    found = [parse(m.value) for m in bus.read_all(topic)]
    return "; ".join(f"{e.type} {e.data.model_dump_json()}" for e in found if e.id == event_id)


def dead_letter_copies(bus: Bus, topic: str) -> Counter[Origin | None]:
    """Every message in the dead-letter topic by the origin it was copied from, none de-duplicated."""
    return Counter(origin_of(m) for m in bus.read_all(topic))


def triggered_events(state_db: Path) -> set[str]:
    """The event ids the sensor's decision log ties to a run: triggered, or refused by the engine because
    the run it started before a crash (and had not recorded) holds the key."""
    from ctloop.sensors.local.decisions import list_decisions

    return {d.event_id for d in list_decisions(state_db, limit=1_000_000) if d.run_id}


def audit(registry: Registry, bus: Bus, *, models: Iterable[str], models_topic: str, deadletter_topic: str,
          expected: Expected, state_db: Path | None = None) -> Figures:
    """The figures, and a line per problem found: lost, duplicated, unannounced, phantom, unexplained,
    dead-lettered other than exactly once."""
    models = sorted(set(models))
    versions = lineage(registry, models)
    moves = alias_moves(registry, models)
    ids = announced(bus, models_topic, models)
    copies = dead_letter_copies(bus, deadletter_topic)
    problems: list[str] = []

    registered = {(model, digest) for model, digest, _ in versions}
    lost = sorted(expected.registrations - registered)
    problems += [f"lost: no version of {m} for data {d}" for m, d in lost]
    duplicates = {k: v for k, v in versions.items() if len(v) > 1}
    problems += [f"duplicate registration: {k} -> versions {v}" for k, v in duplicates.items()]

    automatic = Counter((m.model, m.version) for m in moves if m.action == "promote" and not m.manual)
    problems += [f"duplicate alias move: {m} version {v} promoted {n} times" for (m, v), n in automatic.items()
                 if n > 1]
    move_ids = {m.event_id: m for m in moves}
    unannounced = [m for m in moves if m.event_id not in ids]
    problems += [f"unannounced alias move: {m}" for m in unannounced]
    phantom = sorted(set(ids) - set(move_ids))
    problems += [f"announcement of a move that never committed: {p} {announcement(bus, models_topic, p)}"
                 for p in phantom]

    unexplained: list[Move] = []
    if state_db is not None:
        triggered = triggered_events(state_db)
        unexplained = [m for m in moves if not m.manual and _event_of(registry, m.model, m.version) not in triggered]
        problems += [f"alias move not triggered by the sensor: {m}" for m in unexplained]

    not_once = {o: n for o, n in copies.items() if o not in expected.bad_messages or n != 1}
    not_once.update({o: 0 for o in expected.bad_messages if o not in copies})
    problems += [f"dead-lettered {n} times: {o}" for o, n in sorted(not_once.items(), key=str)]

    return Figures(
        expected_registrations=len(expected.registrations), lost=len(lost),
        versions=sum(len(v) for v in versions.values()),
        duplicate_registrations=sum(len(v) - 1 for v in duplicates.values()),
        alias_moves=len(moves), duplicate_alias_moves=sum(n - 1 for n in automatic.values() if n > 1),
        unannounced_alias_moves=len(unannounced), phantom_announcements=len(phantom),
        announcements=sum(ids.values()), repeated_announcements=sum(n - 1 for n in ids.values()),
        unexplained_alias_moves=len(unexplained), bad_messages=len(expected.bad_messages),
        dead_letters=sum(copies.values()), dead_lettered_not_once=len(not_once), problems=tuple(problems),
    )


def _event_of(registry: Registry, model: str, version: str) -> str | None:
    return registry.version(model, version).tags.get("ctloop.event_id")


"""The promotion outbox: events that an alias move must announce, kept in the registry until published.

A move records its event (a registered-model tag `ctloop.outbox.<time>.<txid>`) as part of its
commit, then publishes it, then deletes the record. A process that dies in between leaves the
record behind; whoever drains the model's outbox next (the next promotion or rollback of the model,
or `drain` at a promoter's, server's or CLI's start) publishes it. Every alias move is announced at
least once, with the same event id each time, so consumers dedupe by id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from ctloop.bus import Bus
from ctloop.crashpoints import crash_point
from ctloop.deploy.registry import Registry, RegistryError
from ctloop.events import Event, to_bytes

log = logging.getLogger(__name__)

OUTBOX_PREFIX = "ctloop.outbox."


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    topic: str
    model: str
    event: str

    @classmethod
    def of(cls, txid: str, topic: str, model: str, event: Event) -> Record:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        return cls(f"{OUTBOX_PREFIX}{stamp}.{txid}", topic, model, to_bytes(event).decode())

    def to_json(self) -> str:
        return json.dumps({"key": self.key, "topic": self.topic, "model": self.model, "event": self.event})

    @classmethod
    def from_json(cls, raw: str) -> Record:
        doc = json.loads(raw)
        return cls(doc["key"], doc["topic"], doc["model"], doc["event"])


def record(registry: Registry, entry: Record) -> None:
    """Keep `entry` until it is published (an upsert: recording twice is harmless)."""
    registry.set_model_tag(entry.model, entry.key, entry.to_json())


def pending(registry: Registry, model: str) -> list[Record]:
    """The model's unpublished records, oldest first."""
    tags = registry.model(model).tags
    return [Record.from_json(tags[k]) for k in sorted(tags) if k.startswith(OUTBOX_PREFIX)]


def drain(registry: Registry, bus: Bus, model: str) -> list[str]:
    """Publish the model's pending records in order, deleting each once the bus has it; returns the
    keys published. Stops at the first failure, so a later event never overtakes an earlier one."""
    done: list[str] = []
    for entry in pending(registry, model):
        try:
            bus.publish(entry.topic, entry.event.encode(), key=entry.model)
            bus.flush()
        except Exception:
            log.exception("could not publish outbox record %s of %s; it stays for the next drain", entry.key, model)
            return done
        crash_point("event-published")
        try:
            registry.delete_model_tag(model, entry.key)
            crash_point("outbox-marked")
        except RegistryError as exc:
            # Published but not marked: the next drain publishes it again, with the same event id.
            log.warning("published %s of %s but could not mark it: %s", entry.key, model, exc)
        done.append(entry.key)
    return done


def drain_all(registry: Registry, bus: Bus) -> dict[str, list[str]]:
    """`drain` every model that has pending records (what a process runs at its start)."""
    out: dict[str, list[str]] = {}
    for info in registry.models():
        if any(k.startswith(OUTBOX_PREFIX) for k in info.tags):
            out[info.name] = drain(registry, bus, info.name)
    return out

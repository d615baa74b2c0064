"""Dead-lettering: a message that cannot be processed is kept, with the reason, never dropped.

`dead_letter` copies a message once per call; `DeadLetters` copies each origin message exactly once even
when a crash makes the bus deliver it again (what a consumer that commits after its work sees).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from ctloop.bus import Bus, Message
from ctloop.crashpoints import crash_point
from ctloop.sqlite import connect

REASON = "ctloop.reason"
ORIGIN_TOPIC = "ctloop.origin.topic"
ORIGIN_PARTITION = "ctloop.origin.partition"
ORIGIN_OFFSET = "ctloop.origin.offset"
FLUSH_PATIENCE_S = 60.0


def dead_letter(bus: Bus, topic: str, message: Message, reason: str) -> None:
    """Copy `message` verbatim to the dead-letter `topic`, the reason and origin as headers."""
    headers = (
        (REASON, reason.encode("utf-8", errors="replace")[:4096]),
        (ORIGIN_TOPIC, message.topic.encode()),
        (ORIGIN_PARTITION, str(message.partition).encode()),
        (ORIGIN_OFFSET, str(message.offset).encode()),
    )
    bus.publish(topic, message.value, key=message.key, headers=headers)
    # Rides out a broker restart, as the producer itself would: the consumer cannot commit meanwhile anyway, and
    # a failure here would stop it.
    bus.flush(timeout_s=FLUSH_PATIENCE_S)


def reason_of(message: Message) -> str | None:
    raw = message.header(REASON)
    return raw.decode("utf-8", errors="replace") if raw is not None else None


def origin_of(message: Message) -> tuple[str, int, int] | None:
    """The (topic, partition, offset) a dead letter was copied from; None for a message without origin."""
    topic, partition, offset = (message.header(h) for h in (ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET))
    if topic is None or partition is None or offset is None:
        return None
    return topic.decode(), int(partition), int(offset)


Origin = tuple[str, int, int]


class DeadLetterRecord(Protocol):
    """Where `DeadLetters` keeps the origins it copied (SQLite by default; the admission gateway keeps them in
    its shared store, where any replica may get a message again)."""

    def claim(self, origin: Origin, reason: str) -> bool:
        """Record `origin` as pending, atomically; False when it was recorded before."""

    def mark_sent(self, origin: Origin) -> None: ...

    def pending(self) -> list[Origin]:
        """The origins recorded and not yet marked sent that this consumer should resolve."""

    def resolve(self, sent: Collection[Origin], forgotten: Collection[Origin]) -> None:
        """Mark `sent` sent and delete `forgotten`, in one transaction."""

    def close(self) -> None: ...


class SqliteDeadLetterRecord:
    """The record as one SQLite table, in the consumer's own state file."""

    def __init__(self, db: Path | str) -> None:
        self._db = connect(db)
        self._db.execute("CREATE TABLE IF NOT EXISTS dead_letters (topic TEXT, partition INTEGER, offset INTEGER,"
                         " reason TEXT, sent INTEGER, PRIMARY KEY (topic, partition, offset))")

    def claim(self, origin: Origin, reason: str) -> bool:
        with self._db:
            return bool(self._db.execute("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, 0)",
                                         (*origin, reason)).rowcount)

    def mark_sent(self, origin: Origin) -> None:
        with self._db:
            self._db.execute(_MARK_SENT, origin)

    def pending(self) -> list[Origin]:
        return [tuple(row) for row in self._db.execute("SELECT topic, partition, offset FROM dead_letters"
                                                       " WHERE NOT sent")]

    def resolve(self, sent: Collection[Origin], forgotten: Collection[Origin]) -> None:
        with self._db:
            self._db.executemany(_MARK_SENT, sent)
            self._db.executemany("DELETE FROM dead_letters WHERE topic = ? AND partition = ? AND offset = ?",
                                 forgotten)

    def close(self) -> None:
        self._db.close()


_MARK_SENT = "UPDATE dead_letters SET sent = 1 WHERE topic = ? AND partition = ? AND offset = ?"


class DeadLetters:
    """Dead-lettering exactly once per origin message, for one consumer, across crashes and redeliveries.

    Each origin (topic, partition, offset) is recorded (`db`: a SQLite file, or any `DeadLetterRecord`) before
    its copy is published and marked sent once the broker acknowledged it, so a redelivered message already sent
    is not copied again. A crash between recording and marking leaves the record pending; `recover` (call it
    before consuming) looks for those origins in the dead-letter topic and forgets the ones that are not there,
    whose redelivery then copies them. That needs what every ctloop consumer does: commit an offset only after
    `send` returned.
    """

    def __init__(self, bus: Bus, topic: str, db: Path | str | DeadLetterRecord) -> None:
        self.bus = bus
        self.topic = topic
        self.record = SqliteDeadLetterRecord(db) if isinstance(db, (str, Path)) else db

    def send(self, message: Message, reason: str) -> bool:
        """Copy `message` to the dead-letter topic unless it was copied before; True when copied now."""
        origin = (message.topic, message.partition, message.offset)
        if not self.record.claim(origin, reason):
            return False
        dead_letter(self.bus, self.topic, message, reason)
        crash_point("dead-letter-published")
        self.record.mark_sent(origin)
        return True

    def recover(self) -> int:
        """Resolve the records a crash left pending: an origin found in the dead-letter topic is marked sent,
        one not found is forgotten, so that its redelivery copies it. Returns how many were forgotten."""
        pending = self.record.pending()
        if not pending:
            return 0
        present = {origin_of(m) for m in self.bus.read_all(self.topic)}
        forgotten = [origin for origin in pending if origin not in present]
        self.record.resolve([origin for origin in pending if origin in present], forgotten)
        return len(forgotten)

    def pending(self) -> int:
        return len(self.record.pending())

    def close(self) -> None:
        self.record.close()

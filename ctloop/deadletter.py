"""Dead-lettering: a message that cannot be processed is kept, with the reason, never dropped.

`dead_letter` copies a message once per call; `DeadLetters` copies each origin message exactly once even
when a crash makes the bus deliver it again (what a consumer that commits after its work sees).
"""

from __future__ import annotations

from pathlib import Path

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


class DeadLetters:
    """Dead-lettering exactly once per origin message, for one consumer, across crashes and redeliveries.

    Each origin (topic, partition, offset) is recorded in `db` before its copy is published and marked sent
    once the broker acknowledged it, so a redelivered message already sent is not copied again. A crash
    between recording and marking leaves the record pending; `recover` (call it before consuming) looks for
    those origins in the dead-letter topic and forgets the ones that are not there, whose redelivery then
    copies them. That needs what every ctloop consumer does: commit an offset only after `send` returned.
    """

    def __init__(self, bus: Bus, topic: str, db: Path | str) -> None:
        self.bus = bus
        self.topic = topic
        self._db = connect(db)
        self._db.execute("CREATE TABLE IF NOT EXISTS dead_letters (topic TEXT, partition INTEGER, offset INTEGER,"
                         " reason TEXT, sent INTEGER, PRIMARY KEY (topic, partition, offset))")

    def send(self, message: Message, reason: str) -> bool:
        """Copy `message` to the dead-letter topic unless it was copied before; True when copied now."""
        origin = (message.topic, message.partition, message.offset)
        with self._db:
            inserted = self._db.execute("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, 0)",
                                        (*origin, reason)).rowcount
        if not inserted:
            return False
        dead_letter(self.bus, self.topic, message, reason)
        crash_point("dead-letter-published")
        self._mark_sent(origin)
        return True

    def recover(self) -> int:
        """Resolve the records a crash left pending: an origin found in the dead-letter topic is marked sent,
        one not found is forgotten, so that its redelivery copies it. Returns how many were forgotten."""
        pending = self._db.execute("SELECT topic, partition, offset FROM dead_letters WHERE NOT sent").fetchall()
        if not pending:
            return 0
        present = {origin_of(m) for m in self.bus.read_all(self.topic)}
        with self._db:
            for origin in pending:
                if tuple(origin) in present:
                    self._db.execute("UPDATE dead_letters SET sent = 1 WHERE topic = ? AND partition = ?"
                                     " AND offset = ?", origin)
                else:
                    self._db.execute("DELETE FROM dead_letters WHERE topic = ? AND partition = ? AND offset = ?",
                                     origin)
        return sum(1 for origin in pending if tuple(origin) not in present)

    def pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM dead_letters WHERE NOT sent").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _mark_sent(self, origin: tuple[str, int, int]) -> None:
        with self._db:
            self._db.execute("UPDATE dead_letters SET sent = 1 WHERE topic = ? AND partition = ? AND offset = ?",
                             origin)

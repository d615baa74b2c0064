"""A durable log on SQLite with per-group offsets: the bus of the embedded default.

Several processes may share one file (WAL mode); each topic has a single partition. Threads may
share one instance: a lock serializes its connection, whose transactions cannot interleave.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from ctloop.bus import Headers, Message, as_key
from ctloop.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_messages (
    topic TEXT NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, offset)
);
CREATE TABLE IF NOT EXISTS bus_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic)
);
"""


class EmbeddedBus:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = connect(self.path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def publish(self, topic: str, value: bytes, *, key: str | bytes | None = None, headers: Headers = ()) -> None:
        encoded = json.dumps([[k, v.hex()] for k, v in headers])
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO bus_messages VALUES (?, (SELECT COALESCE(MAX(offset) + 1, 0) FROM bus_messages"
                " WHERE topic = ?), ?, ?, ?, ?)",
                (topic, topic, as_key(key), bytes(value), encoded, int(time.time() * 1000)),
            )

    def publish_many(self, topic: str, messages: Sequence[tuple[bytes, str | bytes | None]]) -> None:
        """Append `(value, key)` pairs to `topic` in one transaction: consecutive offsets in the given order,
        all or none, one durable commit (one fsync) for the lot. A writer of many small messages (the
        prediction log) groups them this way instead of paying a commit per message."""
        if not messages:
            return
        now = int(time.time() * 1000)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            first = self._db.execute(
                "SELECT COALESCE(MAX(offset) + 1, 0) FROM bus_messages WHERE topic = ?", (topic,)).fetchone()[0]
            self._db.executemany(
                "INSERT INTO bus_messages VALUES (?, ?, ?, ?, '[]', ?)",
                ((topic, first + i, as_key(key), bytes(value), now) for i, (value, key) in enumerate(messages)),
            )

    def flush(self, timeout_s: float = 10.0) -> None:
        """Each publish commits its own transaction, so there is nothing to wait for."""

    def consumer(self, topics: Sequence[str], group: str) -> EmbeddedConsumer:
        return EmbeddedConsumer(connect(self.path), list(topics), group)

    def read_all(self, topic: str) -> list[Message]:
        reader = EmbeddedConsumer(connect(self.path), [topic], f"read-all-{uuid.uuid4().hex}")
        try:
            return reader._fetch(max_records=2**31)
        finally:
            reader.close()

    def end_offsets(self, topic: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(offset) + 1, 0) FROM bus_messages WHERE topic = ?", (topic,))
            return int(row.fetchone()[0])

    def close(self) -> None:
        self._db.close()


class EmbeddedConsumer:
    def __init__(self, db: sqlite3.Connection, topics: list[str], group: str) -> None:
        self._db = db
        self._topics = topics
        self._group = group
        self._lock = threading.Lock()
        self._position = {topic: self._committed(topic) for topic in topics}

    def _committed(self, topic: str) -> int:
        row = self._db.execute(
            "SELECT next_offset FROM bus_offsets WHERE grp = ? AND topic = ?", (self._group, topic)
        ).fetchone()
        return int(row[0]) if row else 0

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                batch = self._fetch(max_records)
            if batch or time.monotonic() >= deadline:
                return batch
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _fetch(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for topic in self._topics:
            if len(out) >= max_records:
                break
            rows = self._db.execute(
                "SELECT offset, key, value, headers, timestamp_ms FROM bus_messages"
                " WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (topic, self._position[topic], max_records - len(out)),
            ).fetchall()
            for offset, key, value, headers, ts in rows:
                decoded = tuple((k, bytes.fromhex(v)) for k, v in json.loads(headers))
                out.append(Message(topic, 0, offset, key, value, decoded, ts))
            if rows:
                self._position[topic] = rows[-1][0] + 1
        return out

    def commit(self, message: Message) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO bus_offsets VALUES (?, ?, ?) ON CONFLICT (grp, topic)"
                " DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                (self._group, message.topic, message.offset + 1),
            )

    def close(self) -> None:
        self._db.close()

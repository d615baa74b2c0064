"""The bus: one small interface over Kafka and an embedded SQLite log, with the same semantics.

At-least-once: a consumer commits only after its work is done; whatever a group polled but did
not commit is delivered again to the next consumer of that group. A new group starts from the
earliest message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

Headers = tuple[tuple[str, bytes], ...]


class Message(NamedTuple):
    """One consumed record. A named tuple rather than a frozen dataclass: a consumer makes one per record, and
    a frozen dataclass's `__init__` (a guarded `setattr` per field) cost ~3 µs of a sensor's ~15 µs budget."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Consumer(Protocol):
    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        """Messages after this consumer's position; empty when none arrived within the timeout."""

    def commit(self, message: Message) -> None:
        """Mark `message` and everything before it in its partition as done for this group."""

    def close(self) -> None: ...


class Bus(Protocol):
    def publish(self, topic: str, value: bytes, *, key: str | bytes | None = None, headers: Headers = ()) -> None: ...

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until everything published so far is durable."""

    def consumer(self, topics: Sequence[str], group: str) -> Consumer: ...

    def read_all(self, topic: str) -> list[Message]:
        """Every message in `topic`, from its beginning to its end as of the call; no group, no commits."""

    def close(self) -> None: ...


def as_key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key

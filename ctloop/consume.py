"""How every component consumes a batch: parse, handle, then commit; bad messages dead-lettered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ctloop.bus import Bus, Consumer, Message
from ctloop.deadletter import dead_letter
from ctloop.events import DEFAULT_MAX_BYTES, Event, EventError, parse


class Unroutable(Exception):
    """Raised by a handler for a well-formed event it can never process; the event is dead-lettered."""


Handler = Callable[[Event, Message], None]


@dataclass
class LoopStats:
    handled: int = 0
    dead_lettered: int = 0


def process_batch(
    consumer: Consumer,
    bus: Bus,
    messages: list[Message],
    handle: Handler,
    *,
    deadletter_topic: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    stats: LoopStats | None = None,
) -> LoopStats:
    """Handle each message then commit it. A handler error other than `Unroutable` propagates
    uncommitted, so the message is redelivered after a restart."""
    stats = stats or LoopStats()
    for message in messages:
        try:
            event = parse(message.value, max_bytes=max_bytes)
            handle(event, message)
            stats.handled += 1
        except EventError as exc:
            dead_letter(bus, deadletter_topic, message, exc.reason)
            stats.dead_lettered += 1
        except Unroutable as exc:
            dead_letter(bus, deadletter_topic, message, f"unroutable: {exc}")
            stats.dead_lettered += 1
        consumer.commit(message)
    return stats


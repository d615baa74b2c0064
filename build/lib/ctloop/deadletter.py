"""Dead-lettering: a message that cannot be processed is kept, with the reason, never dropped."""

from __future__ import annotations

from ctloop.bus import Bus, Message

REASON = "ctloop.reason"
ORIGIN_TOPIC = "ctloop.origin.topic"
ORIGIN_PARTITION = "ctloop.origin.partition"
ORIGIN_OFFSET = "ctloop.origin.offset"


def dead_letter(bus: Bus, topic: str, message: Message, reason: str) -> None:
    """Copy `message` verbatim to the dead-letter `topic`, the reason and origin as headers."""
    headers = (
        (REASON, reason.encode("utf-8", errors="replace")[:4096]),
        (ORIGIN_TOPIC, message.topic.encode()),
        (ORIGIN_PARTITION, str(message.partition).encode()),
        (ORIGIN_OFFSET, str(message.offset).encode()),
    )
    bus.publish(topic, message.value, key=message.key, headers=headers)
    bus.flush()


def reason_of(message: Message) -> str | None:
    raw = message.header(REASON)
    return raw.decode("utf-8", errors="replace") if raw is not None else None

"""The event data a sensor sees, built locally exactly as Argo Events builds it, and gjson-style lookup."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ctloop.bus import Message
from ctloop.sensors.spec import check_path

_MISSING = object()


class PathMissing(KeyError):
    """No value at a path in the event data."""


def kafka_event_data(message: Message, body: Any) -> dict[str, Any]:
    """The Kafka EventSource's payload (`jsonBody: true`): topic, key, partition, timestamp, headers, body."""
    return {
        "topic": message.topic,
        "key": message.key.decode("utf-8", errors="replace") if message.key is not None else "",
        "partition": message.partition,
        "timestamp": str(message.timestamp_ms or ""),
        "headers": {k: v.decode("utf-8", errors="replace") for k, v in message.headers},
        "body": body,
    }


def calendar_event_data(tick: datetime, metadata: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The calendar EventSource's payload: the tick's time as Go prints it (in UTC) and the source's metadata."""
    return {"eventTime": tick.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"), "metadata": dict(metadata)}


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (numeric parts index arrays); raises `PathMissing`."""
    value = data
    for part in check_path(path):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = _MISSING
        if value is _MISSING:
            raise PathMissing(path)
    return value


def as_text(value: Any) -> str:
    """The string Argo Events substitutes for a value: raw for strings, JSON for everything else."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))

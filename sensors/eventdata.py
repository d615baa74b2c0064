"""The event data a sensor sees, built locally exactly as Argo Events builds it, and gjson-style lookup."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ctloop.bus import Message
from ctloop.sensors.spec import check_path

MISSING = object()


class PathMissing(KeyError):
    """No value at a path in the event data."""


def kafka_event_data(message: Message, body: Any) -> dict[str, Any]:
    """The Kafka EventSource's payload (`jsonBody: true`): topic, key, partition, timestamp, headers, body."""
    key, headers, timestamp_ms = message.key, message.headers, message.timestamp_ms
    return {  # built for every event a sensor reads: no comprehension for the usual empty headers
        "topic": message.topic,
        "key": "" if key is None else key.decode("utf-8", "replace"),
        "partition": message.partition,
        "timestamp": str(timestamp_ms) if timestamp_ms else "",
        "headers": {k: v.decode("utf-8", "replace") for k, v in headers} if headers else {},
        "body": body,
    }


def calendar_event_data(tick: datetime, metadata: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The calendar EventSource's payload: the tick's time as Go prints it (in UTC) and the source's metadata."""
    return {"eventTime": tick.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"), "metadata": dict(metadata)}


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (numeric parts index arrays); raises `PathMissing`."""
    value = find(data, check_path(path))
    if value is MISSING:
        raise PathMissing(path)
    return value


def find(data: Any, parts: tuple[str, ...]) -> Any:
    """The value at a path already split by `check_path`, or `MISSING`: `lookup` without the exception, for
    filters and mappings compiled once and run on every event."""
    value = data
    try:
        # The common case, a path through JSON objects only, read without a type test per step.
        for part in parts:
            value = value[part]
        return value
    except KeyError:
        return MISSING  # only a dict raises KeyError for a str part: the key is absent
    except TypeError:
        pass  # an array (indexed by number) or a scalar on the way: the general walk below
    value = data
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def as_text(value: Any) -> str:
    """The string Argo Events substitutes for a `dataKey`: gjson's text of the value (raw JSON for the rest).

    A JSON number with a fraction or exponent is a float here and gjson prints it positionally
    (`1e3` and `1000.0` are "1000"); integers stay as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _positional(value)
    return json.dumps(value, separators=(",", ":"))


def go_text(value: Any) -> str:
    """What Go's `%v` prints for a JSON value as an Argo Events `dataTemplate` sees it (every number a float64)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_float(value)
    if isinstance(value, list):
        return "[" + " ".join(go_text(v) for v in value) + "]"
    return "map[" + " ".join(f"{k}:{go_text(v)}" for k, v in sorted(value.items())) + "]"


def go_empty(value: Any) -> bool:
    """sprig's `empty`, which decides whether `default` takes its fallback."""
    return value is None or value is False or value in ("", 0) or (isinstance(value, list | dict) and not value)


def _digits(value: float) -> tuple[str, str, int]:
    """Sign, shortest round-trip digits and decimal exponent (value = 0.digits * 10**exp), as Go's strconv finds."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign, "0", 1
    exact = Decimal(repr(abs(value)))
    digits = "".join(map(str, exact.as_tuple().digits)).rstrip("0")
    return sign, digits, exact.adjusted() + 1


def _positional(value: float) -> str:
    """strconv.FormatFloat(value, 'f', -1, 64)."""
    sign, digits, point = _digits(value)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_float(number: float) -> str:
    """fmt's `%v` of a float64: shortest digits, exponent form below 1e-4 and from 1e6 (Go's %g)."""
    try:
        value = float(number)
    except OverflowError:
        return "+Inf" if number > 0 else "-Inf"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign, digits, point = _digits(value)
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return _positional(value)

"""The sensor's parse per message, fast path against the general path (the parse before the fast path) and a
bare `orjson.loads`, on the recorded stream of mixed events (`tests.sensors.recorded_stream`).

Run: $V/bin/python bench/parse.py [--events 20000] [--reps 7] [--labels 20000]

Each repetition times every method over the same messages, in turn (side by side), with the thread's CPU clock
(which other tenants of a shared host do not advance); the table gives the median µs per message of each group:
the plainly valid events of each hot type (the fast path), the other valid events and the malformed ones (both
take the general path after the fast one refuses them). "sensor's share" adds what the sensor does next with a
parsed event that the parse can make cheaper: its content digest and its Kafka event data. `parse_brief` is
the sensor's lean parse (the content digest included; no `Event` built for a plainly valid arrival, promotion,
rollback, finished run or drift or quality verdict); "sensor's share, brief" adds the Kafka event data to it, to
compare with "sensor's share, fast" (the last column).

A second table gives the joiner's parse of label events, in µs per label: `--labels` labels as one
`ctloop.label.observed` event each and as `ctloop.labels.observed` events of 1000 (ids in serving's form, half
naming model and entity key, a few distinct observation times), by the general path, `parse_document` and
`parse` (what the joiner calls: for a label event it reads no document).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the recorded stream lives with the tests

from ctloop import events
from ctloop.bus import Message
from ctloop.events import (
    EventError,
    LabelObserved,
    LabelsObserved,
    content_digest,
    new_event,
    parse,
    parse_brief,
    parse_document,
    to_bytes,
)
from ctloop.sensors.eventdata import kafka_event_data
from tests.sensors.recorded_stream import MAX_EVENT_BYTES, generate


def bare(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def general(raw: bytes) -> Any:
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        return events._parse_general(raw)
    except EventError:
        return None


def fast(raw: bytes) -> Any:
    try:
        return parse_document(raw, max_bytes=MAX_EVENT_BYTES)
    except EventError:
        return None


def brief(raw: bytes) -> Any:
    try:
        return parse_brief(raw, max_bytes=MAX_EVENT_BYTES)
    except EventError:
        return None


def brief_share(message: Message) -> Any:
    """`parse_brief` (the digest included), then the Kafka event data of a valid event."""
    parsed = brief(message.value)
    return None if parsed is None else kafka_event_data(message, parsed.document)


def share(parse: Callable[[bytes], Any]) -> Callable[[Message], Any]:
    """`parse`, then the content digest and event data of a valid event, as the sensor takes them."""

    def run(message: Message) -> Any:
        parsed = parse(message.value)
        if parsed is None:
            return None
        event, doc = parsed
        return content_digest(event), kafka_event_data(message, doc)

    return run


def group_of(raw: bytes) -> str:
    try:
        event, _ = parse_document(raw, max_bytes=MAX_EVENT_BYTES)
    except EventError:
        return "malformed"
    return event.type.removeprefix("ctloop.") if events._parse_plain(raw) is not None else "other valid"


def per_message_us(run: Callable[[Any], Any], items: Sequence[Any]) -> float:
    start = time.thread_time_ns()
    for item in items:
        run(item)
    return (time.thread_time_ns() - start) / 1000 / len(items)


def label_events(count: int) -> dict[str, tuple[list[bytes], int]]:
    """The same labels one per event and 1000 per event: messages and labels per message, by group."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch = uuid.uuid4().hex
    labels = [LabelObserved(prediction_id=f"{batch}-{n}", label=n % 2, observed_at=start + timedelta(minutes=n % 7))
              if n % 2 else LabelObserved(model="churn", key=f"customer-{n}", label=float(n % 3),
                                          observed_at=start + timedelta(minutes=n % 7))
              for n in range(count)]
    return {"label.observed, 1 per event": ([to_bytes(new_event(label)) for label in labels], 1),
            "labels.observed, 1000 per event": ([to_bytes(new_event(LabelsObserved(labels=labels[n:n + 1000])))
                                                 for n in range(0, count, 1000)], 1000)}


def label_table(count: int, reps: int) -> None:
    methods: dict[str, Callable[[bytes], Any]] = {"general path": events._parse_general,
                                                  "parse_document": parse_document, "parse": parse}
    groups = label_events(count)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(reps):
        for group, (messages, per) in groups.items():
            for name, run in methods.items():
                times.setdefault((group, name), []).append(per_message_us(run, messages) / per)
    print(f"\nCPU µs per label, median of {reps} ({count} labels)\n")
    print("| group | messages | " + " | ".join(methods) + " | general / parse |")
    print("|---|---|" + "---|" * (len(methods) + 1))
    for group, (messages, _) in groups.items():
        medians = [statistics.median(times[(group, name)]) for name in methods]
        print(f"| {group} | {len(messages)} | " + " | ".join(f"{m:.2f}" for m in medians)
              + f" | {medians[0] / medians[-1]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--labels", type=int, default=20_000, help="labels for the label table (0: none)")
    args = parser.parse_args()
    messages = [Message(r.topic, 0, n, r.key, r.value, (), 1_700_000_000_000 + n)
                for n, r in enumerate(generate(17, args.events))]
    groups: dict[str, list[Message]] = {}
    for message in messages:
        groups.setdefault(group_of(message.value), []).append(message)
    groups["all"] = messages
    methods: dict[str, Callable[[Message], Any]] = {
        "orjson.loads": lambda m: bare(m.value),
        "general path": lambda m: general(m.value),
        "fast path": lambda m: fast(m.value),
        "sensor's share, general": share(general),
        "sensor's share, fast": share(fast),
        "parse_brief": lambda m: brief(m.value),
        "sensor's share, brief": brief_share,
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.reps):
        for group, items in groups.items():
            for name, run in methods.items():
                times.setdefault((group, name), []).append(per_message_us(run, items))
    print(f"CPU µs per message, median of {args.reps} (recorded stream, {args.events} messages)\n")
    print("| group | messages | " + " | ".join(methods) + " | general / fast | share fast / brief |")
    print("|---|---|" + "---|" * (len(methods) + 2))
    for group, items in groups.items():
        medians = {name: statistics.median(times[(group, name)]) for name in methods}
        ratios = (medians["general path"] / medians["fast path"],
                  medians["sensor's share, fast"] / medians["sensor's share, brief"])
        print(f"| {group} | {len(items)} | " + " | ".join(f"{m:.2f}" for m in medians.values())
              + "".join(f" | {r:.2f}x" for r in ratios) + " |")
    if args.labels:
        label_table(args.labels, args.reps)


if __name__ == "__main__":
    main()

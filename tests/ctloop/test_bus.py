"""The bus contract, run against both implementations: the embedded SQLite log and a real Kafka broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.bus import Bus, Consumer, Message
from ctloop.consume import process_batch
from ctloop.deadletter import ORIGIN_OFFSET, ORIGIN_TOPIC, reason_of
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import DataArrived, Event, new_event, to_bytes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "kafka":
        yield request.getfixturevalue("kafka_bus")
        return
    embedded = EmbeddedBus(tmp_path / "bus.db")
    yield embedded
    embedded.close()


@pytest.fixture
def topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def group() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


def collect(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until `count` messages arrived (or the timeout passed); returns what arrived."""
    messages: list[Message] = []
    polls = int(timeout_s / 0.5)
    for _ in range(polls):
        if len(messages) >= count:
            break
        messages.extend(consumer.poll(timeout_s=0.5, max_records=count - len(messages)))
    return messages


def publish_all(bus: Bus, topic: str, values: list[bytes]) -> None:
    for value in values:
        bus.publish(topic, value)
    bus.flush()


def data_arrived(uri: str) -> bytes:
    return to_bytes(new_event(DataArrived(model="churn", uri=uri)))


def test_round_trip_keeps_order_keys_and_headers(bus: Bus, topic: str, group: str) -> None:
    bus.publish(topic, b"first", key="churn", headers=(("trace", b"t-1"), ("empty", b"")))
    bus.publish(topic, b"second", key=b"\x00raw")
    bus.publish(topic, b"third")
    bus.flush()

    consumer = bus.consumer([topic], group)
    try:
        messages = collect(consumer, 3)
    finally:
        consumer.close()

    assert [m.value for m in messages] == [b"first", b"second", b"third"]
    assert [m.key for m in messages] == [b"churn", b"\x00raw", None]
    assert messages[0].headers == (("trace", b"t-1"), ("empty", b""))
    assert messages[0].header("trace") == b"t-1"
    assert messages[1].headers == ()
    assert {m.topic for m in messages} == {topic}
    assert [m.offset for m in messages] == sorted({m.offset for m in messages})
    assert all(m.timestamp_ms for m in messages)


def test_uncommitted_message_is_redelivered_to_the_next_consumer_of_the_group(
    bus: Bus, topic: str, group: str
) -> None:
    publish_all(bus, topic, [b"work"])
    first = bus.consumer([topic], group)
    assert [m.value for m in collect(first, 1)] == [b"work"]
    first.close()

    second = bus.consumer([topic], group)
    try:
        assert [m.value for m in collect(second, 1)] == [b"work"]
    finally:
        second.close()


def test_committed_messages_are_not_redelivered(bus: Bus, topic: str, group: str) -> None:
    publish_all(bus, topic, [b"one", b"two", b"three"])
    first = bus.consumer([topic], group)
    received = collect(first, 3)
    first.commit(received[1])
    first.commit(received[0])  # an older commit must not move the group back
    first.close()

    second = bus.consumer([topic], group)
    try:
        assert [m.value for m in collect(second, 1)] == [b"three"]
        assert second.poll(timeout_s=0.5) == []
    finally:
        second.close()


def test_a_new_group_starts_at_the_earliest_message(bus: Bus, topic: str, group: str) -> None:
    publish_all(bus, topic, [b"a", b"b"])
    first = bus.consumer([topic], group)
    for message in collect(first, 2):
        first.commit(message)
    first.close()

    newcomer = bus.consumer([topic], f"{group}-new")
    try:
        assert [m.value for m in collect(newcomer, 2)] == [b"a", b"b"]
    finally:
        newcomer.close()


def test_a_malformed_message_is_dead_lettered_and_the_consumer_goes_on(bus: Bus, topic: str, group: str) -> None:
    deadletter = f"{topic}-dead"
    publish_all(bus, topic, [data_arrived("file:///a.parquet"), b"{not json", data_arrived("file:///b.parquet")])
    handled: list[Event] = []

    consumer = bus.consumer([topic], group)
    try:
        batch = collect(consumer, 3)
        stats = process_batch(consumer, bus, batch, lambda event, _: handled.append(event), deadletter_topic=deadletter)
    finally:
        consumer.close()

    assert [e.data.uri for e in handled] == ["file:///a.parquet", "file:///b.parquet"]
    assert (stats.handled, stats.dead_lettered) == (2, 1)
    reader = bus.consumer([deadletter], f"{group}-dead")
    try:
        [dead] = collect(reader, 1)
    finally:
        reader.close()
    assert dead.value == b"{not json"
    assert reason_of(dead)
    assert dead.header(ORIGIN_TOPIC) == topic.encode()
    assert dead.header(ORIGIN_OFFSET) == str(batch[1].offset).encode()

    again = bus.consumer([topic], group)
    try:
        assert again.poll(timeout_s=1.0) == [], "every message of the batch was committed"
    finally:
        again.close()


def test_a_consumer_process_killed_before_commit_leaves_the_message_for_the_group(
    bus: Bus, topic: str, group: str, tmp_path: Path
) -> None:
    publish_all(bus, topic, [b"in-flight"])
    kind, target = ("kafka", bus.bootstrap) if not isinstance(bus, EmbeddedBus) else ("embedded", str(bus.path))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ctloop.consumer_process", kind, target, topic, group],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("GOT "), f"the consumer process did not receive the message: {line!r}"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    successor = bus.consumer([topic], group)
    try:
        assert [m.value for m in collect(successor, 1, timeout_s=60)] == [b"in-flight"]
    finally:
        successor.close()


def test_read_all_returns_the_whole_topic_to_its_end_without_touching_any_group(bus: Bus, topic: str,
                                                                                group: str) -> None:
    for i in range(7):
        bus.publish(topic, f"m{i}".encode(), headers=(("n", str(i).encode()),))
    bus.flush()
    assert [m.value for m in bus.read_all(topic)] == [f"m{i}".encode() for i in range(7)]
    consumer = bus.consumer([topic], group)
    try:
        assert len(collect(consumer, 7)) == 7  # reading all committed nothing for anyone
    finally:
        consumer.close()

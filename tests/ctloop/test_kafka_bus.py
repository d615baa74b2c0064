"""Kafka-specific behaviour of the bus; the shared contract is in test_bus.py."""

from __future__ import annotations

import time

import pytest
from kafka.errors import KafkaError

from ctloop.bus import Message
from ctloop.bus_factory import open_bus
from ctloop.embedded_bus import EmbeddedBus
from ctloop.kafka_bus import KafkaBus, KafkaUnavailable
from ctloop.kafka_local import free_port
from ctloop.settings import Settings


def test_no_broker_fails_fast_and_says_what_to_do() -> None:
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"no Kafka broker answered at 127\.0\.0\.1:\d+.*ctloop kafka up"):
        KafkaBus(f"127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    assert time.monotonic() - started < 10, "the constructor must not wait for kafka-python's 30s default"


@pytest.mark.kafka
def test_topics_are_created_on_first_use_with_the_requested_partitions(kafka_bus: KafkaBus, unique_topic: str) -> None:
    kafka_bus.ensure_topics([unique_topic], partitions=3)
    kafka_bus.ensure_topics([unique_topic], partitions=3)  # idempotent

    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bus.bootstrap)
    try:
        [described] = admin.describe_topics([unique_topic])
    finally:
        admin.close()
    assert len(described["partitions"]) == 3


@pytest.mark.kafka
def test_commits_are_per_partition(kafka_bus: KafkaBus, unique_topic: str) -> None:
    kafka_bus.ensure_topics([unique_topic], partitions=3)
    for i in range(12):
        kafka_bus.publish(unique_topic, f"m{i}".encode(), key=f"key-{i}")
    kafka_bus.flush()

    first = kafka_bus.consumer([unique_topic], "per-partition")
    received: list[Message] = []
    for _ in range(60):
        received += first.poll(timeout_s=0.5)
        if len(received) >= 12:
            break
    assert len({m.partition for m in received}) > 1, "keys spread over several partitions"
    kept = received[0].partition
    for message in received:
        if message.partition != kept:
            first.commit(message)
    first.close()

    uncommitted = sorted(m.value for m in received if m.partition == kept)
    second = kafka_bus.consumer([unique_topic], "per-partition")
    redelivered: list[Message] = []
    for _ in range(60):
        redelivered += second.poll(timeout_s=0.5)
        if len(redelivered) >= len(uncommitted):
            break
    redelivered += second.poll(timeout_s=1.0)
    second.close()
    assert sorted(m.value for m in redelivered) == uncommitted


@pytest.mark.kafka
def test_an_invalid_topic_name_is_refused_with_its_name(kafka_bus: KafkaBus) -> None:
    with pytest.raises(KafkaError, match=r"'bad topic!'.*invalid"):
        kafka_bus.publish("bad topic!", b"x")


def test_open_bus_defaults_to_the_embedded_log_under_home(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    bus = open_bus(settings)
    try:
        assert isinstance(bus, EmbeddedBus)
        assert bus.path == settings.state_db
    finally:
        bus.close()


@pytest.mark.kafka
def test_open_bus_connects_to_the_configured_kafka(tmp_path, kafka_bootstrap: str) -> None:
    bus = open_bus(Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap))
    try:
        assert isinstance(bus, KafkaBus)
        assert bus.bootstrap == kafka_bootstrap
    finally:
        bus.close()


@pytest.mark.kafka
def test_a_member_dropped_from_its_group_does_not_crash_on_commit_and_the_message_comes_back(
    kafka_bus: KafkaBus, kafka_bootstrap: str, unique_topic: str
) -> None:
    from ctloop.kafka_bus import RdKafkaBusConsumer

    kafka_bus.publish(unique_topic, b"slow work")
    kafka_bus.flush()
    slow = RdKafkaBusConsumer(kafka_bootstrap, [unique_topic], "slow", client_id="slow", session_timeout_ms=1000,
                              **{"max.poll.interval.ms": 1000})
    [message] = slow.poll(timeout_s=20)
    time.sleep(3)  # past max.poll.interval.ms: the group drops this member
    slow.commit(message)
    slow.close()
    again = kafka_bus.consumer([unique_topic], "slow")
    try:
        assert [m.value for m in again.poll(timeout_s=20)] == [b"slow work"]
    finally:
        again.close()


@pytest.mark.kafka
def test_a_rebalance_tells_the_listeners_what_each_member_was_given_and_lost(
    kafka_bootstrap: str, unique_topic: str, kafka_bus: KafkaBus
) -> None:
    from ctloop.kafka_bus import RdKafkaBusConsumer

    kafka_bus.ensure_topics([unique_topic], partitions=4)
    owned: dict[str, set[int]] = {"a": set(), "b": set()}

    def member(name: str) -> RdKafkaBusConsumer:
        return RdKafkaBusConsumer(
            kafka_bootstrap, [unique_topic], "rebalanced", client_id=name, session_timeout_ms=6000,
            on_assigned=lambda pairs: owned[name].update(p for _, p in pairs),
            on_revoked=lambda pairs: owned[name].difference_update(p for _, p in pairs))

    a = member("a")
    deadline = time.monotonic() + 60
    while owned["a"] != {0, 1, 2, 3}:
        assert time.monotonic() < deadline, f"a alone was not given every partition: {owned}"
        a.poll(timeout_s=0.2)
    b = member("b")
    try:
        while not (owned["a"] and owned["b"]):
            assert time.monotonic() < deadline, f"the partitions were not shared: {owned}"
            a.poll(timeout_s=0.2)
            b.poll(timeout_s=0.2)
        assert owned["a"].isdisjoint(owned["b"]) and owned["a"] | owned["b"] == {0, 1, 2, 3}
    finally:
        b.close()
        a.close()


@pytest.mark.kafka
def test_a_poll_returns_what_has_arrived_without_waiting_for_a_full_batch(
    kafka_bus: KafkaBus, unique_topic: str
) -> None:
    consumer = kafka_bus.consumer([unique_topic], "no-full-batch")
    try:
        assert consumer.poll(timeout_s=10) == []  # joined; nothing yet
        kafka_bus.publish(unique_topic, b"lone", key="k", headers=(("h", b"v"),))
        kafka_bus.flush()
        started = time.monotonic()
        [message] = consumer.poll(timeout_s=10, max_records=500)
        assert time.monotonic() - started < 5, "a lone record is handed over as soon as it is fetched"
        assert (message.value, message.key, message.headers) == (b"lone", b"k", (("h", b"v"),))
        assert message.timestamp_ms is not None and abs(message.timestamp_ms / 1000 - time.time()) < 60
        consumer.commit(message)
        consumer.commit(message)  # once more: nothing moves backwards, nothing raises
    finally:
        consumer.close()

"""The bus on Apache Kafka: an acks=all idempotent producer (kafka-python), consumers on librdkafka
(confluent-kafka) in consumer groups, manual commits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)

from ctloop.bus import Headers, Message, as_key
from ctloop.failures import Unreachable

_log = logging.getLogger("ctloop.kafka")
_rdkafka_log = logging.getLogger("ctloop.kafka.rdkafka")

_TOPIC_ALREADY_EXISTS = 36
_PRUNE_PENDING_AT = 1000
# How long a bus that had reached its broker waits for it to come back before an admin call fails: about as long
# as the producer itself keeps a message for (kafka-python's delivery timeout is 120 s).
_OUTAGE_PATIENCE_S = 60.0


class KafkaUnavailable(ConnectionError, Unreachable):
    """No Kafka broker answered at the configured bootstrap address."""


class KafkaBus:
    """`Bus` over Kafka. Topics are created on first use (`partitions` each, the broker's replication)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "ctloop",
        connect_timeout_s: float = 5.0,
        session_timeout_ms: int = 6000,
        partitions: int = 1,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.connect_timeout_s = connect_timeout_s
        self.session_timeout_ms = session_timeout_ms
        self.partitions = partitions
        self._known_topics: set[str] = set()
        self._pending: list[Any] = []
        self._admin: KafkaAdminClient | None = None
        self._producer: KafkaProducer = self._connect(
            KafkaProducer, acks="all", enable_idempotence=True, linger_ms=0, client_id=f"{client_id}-producer"
        )

    def publish(self, topic: str, value: bytes, *, key: str | bytes | None = None, headers: Headers = ()) -> None:
        self.ensure_topics([topic])
        if len(self._pending) >= _PRUNE_PENDING_AT:
            # Delivered ones need no more watching; failed ones stay until flush() reports them.
            self._pending = [future for future in self._pending if not future.succeeded()]
        self._pending.append(self._producer.send(topic, value=bytes(value), key=as_key(key), headers=list(headers)))

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker acknowledged every published message; raise the first delivery error."""
        pending, self._pending = self._pending, []
        self._producer.flush(timeout=timeout_s)
        for future in pending:
            future.get(timeout=0)

    def consumer(self, topics: Sequence[str], group: str) -> RdKafkaBusConsumer:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        if not group:
            raise ValueError("a consumer needs a group name")
        self.ensure_topics(topics)
        return RdKafkaBusConsumer(self.bootstrap, topics, group, client_id=f"{self.client_id}-{group}",
                                  session_timeout_ms=self.session_timeout_ms)

    def read_all(self, topic: str) -> list[Message]:
        self.ensure_topics([topic])
        reader = confluent_kafka.Consumer(_rdkafka_config(
            self.bootstrap, client_id=f"{self.client_id}-read-all", **{"group.id": f"{self.client_id}-read-all"}))
        try:
            timeout = self.connect_timeout_s
            metadata = reader.list_topics(topic, timeout=timeout).topics[topic]
            ends: dict[int, int] = {}
            for partition in sorted(metadata.partitions):
                low, high = reader.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition),
                                                         timeout=timeout)
                if high > low:
                    ends[partition] = high
            # Assigned, not subscribed: no group is joined and nothing is committed.
            reader.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in ends])
            out: list[Message] = []
            behind = dict(ends)
            deadline = time.monotonic() + 60
            while behind:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"could not read {topic} to its end within 60 s")
                for record in reader.consume(num_messages=500, timeout=1.0):
                    if record.error() is not None:
                        _raise_if_fatal(record.error())
                        continue
                    partition, offset = record.partition(), record.offset()
                    if partition in behind and offset < ends[partition]:
                        out.append(_message(record))
                        if offset + 1 >= ends[partition]:
                            del behind[partition]
            return sorted(out, key=lambda m: (m.partition, m.offset))
        finally:
            reader.close()

    def ensure_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet, and wait until they have leaders."""
        missing = [name for name in dict.fromkeys(names) if name not in self._known_topics]
        if not missing:
            return
        admin, existing = self._list_topics()
        to_create = {
            name: {"num_partitions": partitions or self.partitions, "replication_factor": -1}
            for name in missing
            if name not in existing
        }
        if to_create:
            response = admin.create_topics(to_create, raise_errors=False)
            for topic in response["topics"]:
                if topic["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                    raise KafkaError(f"cannot create topic {topic['name']!r}: {topic['error_message']}")
            admin.wait_for_topics(list(to_create), timeout_ms=int(self.connect_timeout_s * 1000))
        self._known_topics.update(missing)

    def _list_topics(self) -> tuple[KafkaAdminClient, set[str]]:
        """The admin client and the topics there are. A broker that went away after this bus reached it (a
        restart) is waited for, up to `_OUTAGE_PATIENCE_S`, as the producer waits for it by itself: a consumer
        that dead-letters during a broker restart must not die of it."""
        reached = self._admin is not None
        deadline = time.monotonic() + _OUTAGE_PATIENCE_S
        while True:
            try:
                admin = self._admin_client()
                return admin, set(admin.list_topics())
            except (KafkaError, KafkaUnavailable) as exc:
                if not reached or not getattr(exc, "retriable", True) or time.monotonic() > deadline:
                    raise
                _log.warning("the broker at %s went away; waiting for it to list topics", self.bootstrap)
                if self._admin is not None:
                    self._admin.close()
                    self._admin = None
                time.sleep(0.5)

    def close(self) -> None:
        try:
            self._producer.close(timeout=10)
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = self._connect(KafkaAdminClient, client_id=f"{self.client_id}-admin")
        return self._admin

    def _connect(self, client: Any, **config: Any) -> Any:
        # kafka-python 3 constructors block until they reach a broker; fail fast and say what to do.
        timeout_ms = int(self.connect_timeout_s * 1000)
        try:
            return client(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=timeout_ms, **config)
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise KafkaUnavailable(
                f"no Kafka broker answered at {self.bootstrap} within {self.connect_timeout_s:g}s; start one with "
                "`ctloop kafka up` (then set CTLOOP_KAFKA_BOOTSTRAP to the address it prints), "
                "or use the embedded bus (CTLOOP_BUS=embedded)"
            ) from exc


# Commit errors that mean "not now" (the group moved on, or the broker or coordinator is away): the message comes
# again, which at-least-once allows. Any other error (authorization, a bad offset) is raised.
_COMMIT_REFUSED = frozenset({
    RdKafkaError.REBALANCE_IN_PROGRESS, RdKafkaError.ILLEGAL_GENERATION, RdKafkaError.UNKNOWN_MEMBER_ID,
    RdKafkaError.FENCED_INSTANCE_ID, RdKafkaError.NOT_COORDINATOR, RdKafkaError.COORDINATOR_NOT_AVAILABLE,
    RdKafkaError.COORDINATOR_LOAD_IN_PROGRESS, RdKafkaError.REQUEST_TIMED_OUT, RdKafkaError.NETWORK_EXCEPTION,
    RdKafkaError._TRANSPORT, RdKafkaError._TIMED_OUT, RdKafkaError._WAIT_COORD, RdKafkaError._ALL_BROKERS_DOWN,
    RdKafkaError._STATE, RdKafkaError._ASSIGNMENT_LOST, RdKafkaError._NO_OFFSET, RdKafkaError._DESTROY,
})


def _rdkafka_config(bootstrap: str, *, client_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        # Offsets move only when the caller commits, after its own durable write.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # librdkafka's own log lines and client-level errors go through logging, not straight to stderr.
        "logger": _rdkafka_log,
        "error_cb": _on_client_error,
        "log.connection.close": False,
        **overrides,
    }


def _on_client_error(error: RdKafkaError) -> None:
    # Client-level errors (brokers down, a connection refused) are reported here; librdkafka reconnects by itself.
    _log.warning("kafka client: %s", error)


def _raise_if_fatal(error: RdKafkaError) -> None:
    if error.fatal():
        raise KafkaException(error)


Rebalanced = Callable[[list[tuple[str, int]]], None]


def _pairs(partitions: list[confluent_kafka.TopicPartition]) -> list[tuple[str, int]]:
    return [(p.topic, p.partition) for p in partitions]


_NO_TIMESTAMP = confluent_kafka.TIMESTAMP_NOT_AVAILABLE
# `Message`'s fields positionally, without the keyword-parsing `__new__` a named tuple generates (~1 µs a record).
_new_message = tuple.__new__


def _message(record: confluent_kafka.Message) -> Message:
    value = record.value()
    kind, timestamp = record.timestamp()
    headers = record.headers()
    return _new_message(Message, (
        record.topic(), record.partition(), record.offset(), record.key(), b"" if value is None else value,
        tuple((name, header or b"") for name, header in headers) if headers else (),
        None if kind == _NO_TIMESTAMP else timestamp))


class RdKafkaBusConsumer:
    """One member of a consumer group on librdkafka (confluent-kafka), which decodes records in C: the raw
    read costs about a tenth of kafka-python's per record (bench/sensor.py). Commits are explicit, synchronous,
    and never move a partition backwards; a rebalance or a broker outage makes a poll end empty, not raise."""

    def __init__(self, bootstrap: str, topics: Sequence[str], group: str, *, client_id: str,
                 session_timeout_ms: int = 6000, on_assigned: Rebalanced | None = None,
                 on_revoked: Rebalanced | None = None, **overrides: Any) -> None:
        """`on_assigned` and `on_revoked` are told the (topic, partition) pairs a rebalance gives or takes,
        from inside `poll`; partitions lost without a rebalance (the session expired) count as revoked."""
        self._consumer = confluent_kafka.Consumer(_rdkafka_config(
            bootstrap, client_id=client_id, **{
                "group.id": group,
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(100, session_timeout_ms // 3),
                **overrides,
            }))
        # The topics' partitions known before the first join, as a join that raced a just-created topic could
        # otherwise assign nothing until the next metadata refresh.
        for topic in topics:
            self._consumer.list_topics(topic, timeout=10)
        listeners: dict[str, Any] = {}
        if on_assigned is not None:
            listeners["on_assign"] = lambda _, partitions: on_assigned(_pairs(partitions))
        if on_revoked is not None:
            listeners["on_revoke"] = listeners["on_lost"] = lambda _, partitions: on_revoked(_pairs(partitions))
        self._consumer.subscribe(list(topics), **listeners)
        # Per partition, the offsets at which the leader epoch changed: a commit names its record's epoch.
        self._epochs: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        # librdkafka's batch call waits for a full batch or the whole timeout; waiting for one record and then
        # taking what is already fetched keeps a lone event's latency at the broker's.
        first = self._consumer.poll(max(0.0, timeout_s))
        if first is None:
            return []
        records = [first]
        if max_records > 1:
            records += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        out: list[Message] = []
        epochs = self._epochs
        for record in records:
            error = record.error()
            if error is not None:
                _raise_if_fatal(error)
                if error.code() != RdKafkaError._PARTITION_EOF:
                    _log.warning("poll: %s", error)
                continue
            message = _message(record)
            epoch = record.leader_epoch()
            if epoch is not None:
                changes = epochs.get(message[:2])
                if changes is None:
                    changes = epochs[message[:2]] = []
                if not changes or changes[-1][1] != epoch:
                    changes.append((message.offset, epoch))
            out.append(message)
        return out

    def commit(self, message: Message) -> None:
        partition = (message.topic, message.partition)
        next_offset = message.offset + 1
        if next_offset <= self._committed.get(partition, -1):
            return
        epoch = next((e for start, e in reversed(self._epochs.get(partition, ())) if start <= message.offset), -1)
        offset = confluent_kafka.TopicPartition(message.topic, message.partition, next_offset, leader_epoch=epoch)
        try:
            [result] = self._consumer.commit(offsets=[offset], asynchronous=False)
            if result.error is not None:
                raise KafkaException(result.error)
        except KafkaException as exc:
            [error] = exc.args
            if error.fatal() or error.code() not in _COMMIT_REFUSED:
                raise
            # The group moved the partition away (this member was too slow, or a rebalance), or the broker is
            # away (a restart): the message comes again, which at-least-once allows and idempotent handlers
            # absorb. Raising would only crash a consumer that carries on once the broker is back.
            _log.warning("commit of %s[%d]@%d refused, it will be redelivered: %s",
                         message.topic, message.partition, message.offset, error)
            return
        self._committed[partition] = next_offset
        changes = self._epochs.get(partition, [])
        while len(changes) > 1 and changes[1][0] <= message.offset:
            del changes[0]  # an epoch change before the committed record is not needed again

    def close(self) -> None:
        self._consumer.close()

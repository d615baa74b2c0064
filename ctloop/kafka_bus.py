"""The bus on Apache Kafka (kafka-python): acks=all idempotent producer, consumer groups, manual commits."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)
from kafka.structs import OffsetAndMetadata

from ctloop.bus import Headers, Message, as_key
from ctloop.failures import Unreachable

_log = logging.getLogger("ctloop.kafka")

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

    def consumer(self, topics: Sequence[str], group: str) -> KafkaBusConsumer:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        if not group:
            raise ValueError("a consumer needs a group name")
        self.ensure_topics(topics)
        consumer = self._connect(
            KafkaConsumer,
            group_id=group,
            client_id=f"{self.client_id}-{group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 3),
        )
        # Partitions known before the first join: a join without them assigns nothing until the client's next
        # metadata refresh (five minutes by default), which stalls a consumer of a just-created topic.
        for topic in topics:
            consumer.partitions_for_topic(topic)
        consumer.subscribe(list(topics))
        return KafkaBusConsumer(consumer)

    def read_all(self, topic: str) -> list[Message]:
        self.ensure_topics([topic])
        reader = self._connect(KafkaConsumer, group_id=None, enable_auto_commit=False,
                               client_id=f"{self.client_id}-read-all")
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
            reader.assign(partitions)
            reader.seek_to_beginning(*partitions)
            ends = reader.end_offsets(partitions)
            wrapped = KafkaBusConsumer(reader)
            out: list[Message] = []
            deadline = time.monotonic() + 60
            while any(reader.position(tp) < end for tp, end in ends.items()):
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"could not read {topic} to its end within 60 s")
                out += wrapped.poll(timeout_s=1.0)
            return [m for m in out if m.offset < ends[TopicPartition(m.topic, m.partition)]]
        finally:
            reader.close(autocommit=False)

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


class KafkaBusConsumer:
    """One member of a consumer group; commits are explicit and never move a partition backwards."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self._leader_epochs: dict[TopicPartition, dict[int, int]] = {}
        self._committed: dict[TopicPartition, int] = {}

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        # A poll may return early and empty while the group (re)balances; keep going until the deadline.
        remaining_ms = int(timeout_s * 1000)
        deadline_ms = _now_ms() + remaining_ms
        while True:
            try:
                batches = self._consumer.poll(timeout_ms=max(0, remaining_ms), max_records=max_records)
            except KafkaConnectionError as exc:
                # The broker is away (a restart): nothing can be read until it is back, and the consumer
                # reconnects by itself, so this poll ends empty rather than ending the process.
                _log.warning("poll: the broker did not answer, polling again: %s", exc)
                time.sleep(min(0.5, max(0, remaining_ms) / 1000))
                return []
            if batches:
                return self._messages(batches)
            remaining_ms = deadline_ms - _now_ms()
            if remaining_ms <= 0:
                return []

    def commit(self, message: Message) -> None:
        partition = TopicPartition(message.topic, message.partition)
        next_offset = message.offset + 1
        if next_offset <= self._committed.get(partition, -1):
            return
        epochs = self._leader_epochs.get(partition, {})
        leader_epoch = epochs.get(message.offset, -1)
        try:
            self._consumer.commit({partition: OffsetAndMetadata(next_offset, "", leader_epoch)})
        except (CommitFailedError, RebalanceInProgressError, KafkaConnectionError, KafkaTimeoutError) as exc:
            # The group moved the partition away (this member was too slow, or a rebalance), or the broker is
            # away (a restart): the message comes again, which at-least-once allows and idempotent handlers
            # absorb. Raising would only crash a consumer that carries on once the broker is back.
            _log.warning("commit of %s[%d]@%d refused, it will be redelivered: %s",
                         message.topic, message.partition, message.offset, exc)
            return
        self._committed[partition] = next_offset
        for offset in [offset for offset in epochs if offset < next_offset]:
            del epochs[offset]

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def _messages(self, batches: dict[TopicPartition, list[Any]]) -> list[Message]:
        out: list[Message] = []
        for partition in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
            epochs = self._leader_epochs.setdefault(partition, {})
            for record in batches[partition]:
                if record.leader_epoch is not None:
                    epochs[record.offset] = record.leader_epoch
                out.append(
                    Message(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value if record.value is not None else b"",
                        headers=tuple((name, value or b"") for name, value in record.headers or ()),
                        timestamp_ms=record.timestamp,
                    )
                )
        return out


def _now_ms() -> int:
    return int(time.monotonic() * 1000)

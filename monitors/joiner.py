"""The joiner: the predictions topic and the labels topic in, served rows joined to their labels in the store.

Per poll, in this order: dead-letter what is not a prediction batch or a label event (each exactly once), write
every served batch and label of the poll, what they join and the offsets the poll reached in one store
transaction, then commit the consumer offsets. A crash anywhere redelivers at most the uncommitted poll; what of
it is at or below the stored offsets is skipped unread, so a redelivery costs nothing and counts nothing twice.
A label sent again under the same id (a new message, a new offset) is recognised by its id: the store knows the
id of every pending label and of every label settled against the predictions it holds in memory (and, when it
looks older ones up in its file, of theirs), so it counts once.

Labels name a prediction by the id serving returned (`prediction_id`), or by the model and the entity key (the
value of the spec's `data.key` column in the served row); one event carries one label (`ctloop.label.observed`)
or many (`ctloop.labels.observed`, taken or dead-lettered whole). A label may arrive before its prediction: it waits,
pending, and joins when the prediction comes. One observed more than the horizon after serving is kept as late,
never joined into live quality.

The joiner reads of a prediction batch only what names and places its rows (model, version, role, ts, ids, the
row and prediction counts, and the entity-key column if the model has one; `ctloop.predictions.read_head`) and
stores the batch's JSON as received: a batch wrong in any of those is dead-lettered with `parse_batch`'s reason,
but one malformed only in feature cells the joiner never reads (a cell `PredictionBatch` refuses, a columnar row
of the wrong width when no key column is read) is stored and joined here, while the drift monitor dead-letters it
for its own reason. Label events are read from the fast path's structs (`ctloop.events.read_labels`), anything
it doubts by `parse`, for the event or the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ctloop.bus import Bus, Message
from ctloop.events import EventError, LabelObserved, LabelsObserved, parse, read_labels
from ctloop.monitors.delivery import consumer_with_dead_letters, read_batch
from ctloop.monitors.outcomes import Label, OutcomeStore, ServedBatch
from ctloop.predictions import read_head
from ctloop.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_GROUP = "ctloop-outcomes"
DEFAULT_HORIZON_S = 7 * 24 * 3600.0

KeyColumn = Callable[[str], str | None]
"""The entity-key column of a model's served rows (its spec's `data.key`), or None when it has none."""


@dataclass
class JoinerStats:
    messages: int = 0
    rows: int = 0
    labels: int = 0
    dead_lettered: int = 0


class Joiner:
    def __init__(self, bus: Bus, settings: Settings, store: OutcomeStore, *, key_column: KeyColumn,
                 horizon_s: float = DEFAULT_HORIZON_S, group: str = DEFAULT_GROUP) -> None:
        if horizon_s <= 0:
            raise ValueError(f"the join horizon must be positive, got {horizon_s} s")
        self.bus = bus
        self.settings = settings
        self.store = store
        self.key_column = key_column
        self.horizon_s = horizon_s
        self.topics = settings.topics
        self.consumer, self.deadletters = consumer_with_dead_letters(
            bus, [settings.topics.predictions, settings.topics.labels], group, settings.topics.deadletter, store.path)
        self.stats = JoinerStats()
        self._done = store.offsets()

    def step(self, timeout_s: float = 0.5, max_records: int = 1000) -> int:
        """Poll once and store what arrived, then commit it; returns how many messages were handled."""
        messages = self.consumer.poll(timeout_s=timeout_s, max_records=max_records)
        if not messages:
            return 0
        batches: list[ServedBatch] = []
        labels: list[Label] = []
        last: dict[tuple[str, int], Message] = {}
        done = self._done
        for message in messages:
            where = (message.topic, message.partition)
            last[where] = message
            if message.offset <= done.get(where, -1):
                continue  # redelivered after a crash: stored already
            if message.topic == self.topics.labels:
                self._read_labels(message, labels)
            else:
                self._read_batch(message, batches)
        reached = {where: m.offset for where, m in last.items() if m.offset > done.get(where, -1)}
        if batches or labels or reached:
            self.store.add(batches, labels, horizon_s=self.horizon_s, offsets=reached)
            done.update(reached)
        for message in last.values():
            self.consumer.commit(message)
        self.stats.messages += len(messages)
        self.stats.rows += sum(len(b.ids) for b in batches)
        self.stats.labels += len(labels)
        return len(messages)

    def close(self) -> None:
        self.consumer.close()
        self.deadletters.close()

    def _dead_letter(self, message: Message, reason: str) -> None:
        self.deadletters.send(message, reason)
        self.stats.dead_lettered += 1

    def _no_key_column(self, message: Message, model: str | None, where: str) -> None:
        self._dead_letter(message, f"{where} names model {model!r} by entity key, but that model's spec declares "
                                   "no data.key column to match it against")

    def _read_batch(self, message: Message, batches: list[ServedBatch]) -> None:
        head = read_head(message.value, self.key_column)
        if head is not None:
            ids = head.ids or _place_ids(message, head.count)
            batches.append(ServedBatch.of_head(head, ids=ids, body=message.value))
            return
        # Not plainly a batch to the head reader: the full parse takes it or says why not.
        batch = read_batch(self.bus, self.topics.deadletter, message, self.deadletters)
        if batch is None:
            self.stats.dead_lettered += 1
            return
        ids = batch.ids or _place_ids(message, batch.count)
        batches.append(ServedBatch.of(batch, key=self.key_column(batch.model), ids=ids, body=message.value))

    def _read_labels(self, message: Message, labels: list[Label]) -> None:
        observed = read_labels(message.value, max_bytes=self.settings.max_event_bytes)
        if observed is not None:
            for i, (_, _, _, prediction_id, model, _) in enumerate(observed):
                if prediction_id is None and self.key_column(model or "") is None:
                    self._no_key_column(message, model, f"labels.{i}" if len(observed) > 1 else "label")
                    return
            labels += [Label(label_id, label, at, pid) if pid is not None
                       else Label(label_id, label, at, None, model, key)
                       for label_id, label, at, pid, model, key in observed]
            return
        try:
            event = parse(message.value, max_bytes=self.settings.max_event_bytes)
        except EventError as exc:
            self._dead_letter(message, exc.reason)
            return
        data = event.data
        if isinstance(data, LabelObserved):
            items, ids = [data], [event.id]
        elif isinstance(data, LabelsObserved):
            items, ids = data.labels, [f"{event.id}#{i}" for i in range(len(data.labels))]
        else:
            self._dead_letter(message, f"not a label: {event.type} on the labels topic, which carries only "
                                       f"{LabelObserved.event_type} and {LabelsObserved.event_type}")
            return
        for i, item in enumerate(items):
            if item.prediction_id is None and self.key_column(item.model or "") is None:
                self._no_key_column(message, item.model, "label" if len(items) == 1 else f"labels.{i}")
                return
        labels += [Label(label_id, item.label, item.observed_at, item.prediction_id) if item.prediction_id is not None
                   else Label(label_id, item.label, item.observed_at, None, item.model, item.key)
                   for label_id, item in zip(ids, items, strict=True)]


def _place_ids(message: Message, count: int) -> list[str]:
    # Serving names each row; a batch from elsewhere without ids gets ids from its place in the log, which a
    # redelivery repeats.
    return [f"{message.topic}:{message.partition}:{message.offset}:{i}" for i in range(count)]

"""The embedded monitor runtime: the prediction topic of any `Bus` in, drift events and alerts out.

Per closed window, in this order: publish the `DriftDetected` event (and flush), send the alert,
then commit the window's offsets. A crash before the commit redelivers the window's batches, so a
window's verdict is never lost (at worst published twice, with the same event id). A message that is
not a prediction batch goes to the dead-letter topic with the reason, once however often it is redelivered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ctloop.bus import Bus, Message
from ctloop.crashpoints import crash_point
from ctloop.modelspec import SpecNotFound, load_spec
from ctloop.monitors.alerts import WebhookNotifier
from ctloop.monitors.delivery import consumer_with_dead_letters, deliver, read_batch
from ctloop.monitors.monitor import DriftMonitor, WindowOutcome
from ctloop.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_GROUP = "ctloop-monitor"


@dataclass
class ServiceStats:
    messages: int = 0
    rows: int = 0
    windows: int = 0
    drift_events: int = 0
    alerts_sent: int = 0
    dead_lettered: int = 0


def retrain_uri_for(model: str, settings: Settings) -> str | None:
    """The model spec's `retrain_uri`, which drift events carry as the data to retrain on. Without it
    they carry none, and the drift sensor records why it starts no run; said here once, at start."""
    try:
        uri = load_spec(model, settings).retrain_uri
    except SpecNotFound as exc:
        log.warning("%s; drift events for %s will carry no data_uri, so they trigger no retrain", exc, model)
        return None
    if uri is None:
        log.warning("the spec of %s sets no retrain_uri; drift events will carry no data_uri, so they trigger "
                    "no retrain", model)
    return uri


def featurize_for(model: str, settings: Settings) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None:
    """The spec's `monitor.featurize` as a row function, for a model whose served inputs are not the monitored
    columns themselves (images, text); None when the spec names none or is absent."""
    from ctloop.references import row_featurizer

    try:
        reference = load_spec(model, settings).monitor.featurize
    except SpecNotFound:
        return None
    return row_featurizer(reference) if reference else None


class MonitorService:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        monitor: DriftMonitor,
        *,
        notifier: WebhookNotifier | None = None,
        group: str = DEFAULT_GROUP,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.monitor = monitor
        self.notifier = notifier
        # A bad message is committed with its window, so a restart delivers it again: copy it once.
        settings.home.mkdir(parents=True, exist_ok=True)
        self.consumer, self.dead_letters = consumer_with_dead_letters(
            bus, [settings.topics.predictions], group, settings.topics.deadletter,
            settings.home / f"monitor-{group}-{monitor.model}.db")
        self.stats = ServiceStats()
        self.on_outcome: Callable[[WindowOutcome], None] | None = None

    def step(self, timeout_s: float = 0.5, max_records: int = 500) -> list[WindowOutcome]:
        """Poll once, fold in what arrived, finish the windows that closed."""
        outcomes: list[WindowOutcome] = []
        for message in self.consumer.poll(timeout_s=timeout_s, max_records=max_records):
            self.stats.messages += 1
            stream = (message.topic, message.partition)
            batch = read_batch(self.bus, self.settings.topics.deadletter, message, self.dead_letters)
            if batch is None:
                self.stats.dead_lettered += 1
            if batch is None or not self.monitor.accepts(batch):
                self._commit(self.monitor.skip(message, stream))
                continue
            self.stats.rows += batch.count
            for outcome in self.monitor.add(batch, message, stream):
                self._finish(outcome)
                outcomes.append(outcome)
        for outcome in self.monitor.tick():
            self._finish(outcome)
            outcomes.append(outcome)
        return outcomes

    def run(self, should_stop: Callable[[], bool], poll_timeout_s: float = 0.5) -> ServiceStats:
        """Until `should_stop()`; the open window stays uncommitted, to be rebuilt after a restart."""
        while not should_stop():
            self.step(poll_timeout_s)
        return self.stats

    def run_for(self, seconds: float) -> ServiceStats:
        deadline = time.monotonic() + seconds
        return self.run(lambda: time.monotonic() >= deadline)

    def close(self) -> None:
        self.consumer.close()
        self.dead_letters.close()

    def _finish(self, outcome: WindowOutcome) -> None:
        self.stats.windows += 1
        if deliver(outcome, self.monitor.model, self.bus, self.settings.topics.drift, self.notifier,
                   self.monitor.ledger):
            self.stats.alerts_sent += 1
        if outcome.event is not None:
            self.stats.drift_events += 1
        self._commit(outcome.markers)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _commit(self, markers: dict[Hashable, Any]) -> None:
        for message in markers.values():
            if isinstance(message, Message):
                self.consumer.commit(message)
                crash_point("offset-committed")

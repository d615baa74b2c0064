"""The bus edges both monitor runtimes share: reading a prediction batch, delivering a window's outcome."""

from __future__ import annotations

from ctloop.bus import Bus, Message
from ctloop.deadletter import dead_letter
from ctloop.events import to_bytes
from ctloop.monitors.alerts import WebhookNotifier
from ctloop.monitors.monitor import WindowOutcome
from ctloop.predictions import PredictionBatch, PredictionBatchError, parse_batch


def read_batch(bus: Bus, deadletter_topic: str, message: Message) -> PredictionBatch | None:
    """The message's prediction batch, or None once a message that is not one has been dead-lettered."""
    try:
        return parse_batch(message.value)
    except PredictionBatchError as exc:
        dead_letter(bus, deadletter_topic, message, str(exc))
        return None


def deliver(outcome: WindowOutcome, model: str, bus: Bus, drift_topic: str, notifier: WebhookNotifier | None) -> bool:
    """Publish the window's drift event and flush, so it is out before the runtime commits the window's
    offsets, then send its alert; True when an alert went out."""
    if outcome.event is not None:
        bus.publish(drift_topic, to_bytes(outcome.event), key=model)
        bus.flush()
    return outcome.alert is not None and notifier is not None and notifier.send(outcome.alert)

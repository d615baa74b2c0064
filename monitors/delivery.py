"""The bus edges the monitor runtimes and the joiner share: their consumer with its dead letters, reading a
prediction batch, delivering a window's outcome."""

from __future__ import annotations

from pathlib import Path

from ctloop.bus import Bus, Consumer, Message
from ctloop.crashpoints import crash_point
from ctloop.deadletter import DeadLetters, dead_letter
from ctloop.events import to_bytes
from ctloop.monitors.alerts import AlertLedger, AlertRecord, WebhookNotifier
from ctloop.monitors.monitor import WindowOutcome
from ctloop.predictions import PredictionBatch, PredictionBatchError, parse_batch


def consumer_with_dead_letters(bus: Bus, topics: list[str], group: str, deadletter_topic: str,
                               ledger: Path) -> tuple[Consumer, DeadLetters]:
    """A consumer of `topics` in `group`, and its exactly-once dead letters recorded in `ledger`, recovered
    before the first poll as `DeadLetters` requires."""
    dead_letters = DeadLetters(bus, deadletter_topic, ledger)
    dead_letters.recover()
    return bus.consumer(topics, group), dead_letters


def read_batch(bus: Bus, deadletter_topic: str, message: Message,
               dead_letters: DeadLetters | None = None) -> PredictionBatch | None:
    """The message's prediction batch, or None once a message that is not one has been dead-lettered
    (exactly once per message through `dead_letters`, else once per delivery)."""
    try:
        return parse_batch(message.value)
    except PredictionBatchError as exc:
        if dead_letters is not None:
            dead_letters.send(message, str(exc))
        else:
            dead_letter(bus, deadletter_topic, message, str(exc))
        return None


def deliver(
    outcome: WindowOutcome, model: str, bus: Bus, drift_topic: str, notifier: WebhookNotifier | None,
    ledger: AlertLedger | None = None,
) -> bool:
    """Publish the window's drift event and flush, so it is out before the runtime commits the window's
    offsets, then send its alert; True when this window's alert went out.

    With a ledger, the episode state and the alert are recorded before the send and the alert is struck
    off after it: an alert that failed, or whose monitor died mid-send, goes out with the next window
    (at least once), and a restarted monitor does not alert an episode already alerted."""
    if outcome.event is not None:
        bus.publish(drift_topic, to_bytes(outcome.event), key=model)
        bus.flush()
        crash_point("event-published")
    fresh = [outcome.alert] if outcome.alert is not None and notifier is not None else []
    if ledger is None:
        return bool(fresh) and notifier is not None and notifier.send(fresh[0])
    pending = [*ledger.load(model).pending, *fresh]
    ledger.save(model, AlertRecord(outcome.episode, tuple(pending)))
    while pending and notifier is not None and notifier.send(pending[0]):
        pending.pop(0)
    ledger.save(model, AlertRecord(outcome.episode, tuple(pending)))
    return bool(fresh) and fresh[0] not in pending

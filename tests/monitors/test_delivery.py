"""What both runtimes do at the bus: dead-letter what is not a batch, publish a drift event before its alert."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ctloop.deadletter import reason_of
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import DriftDetected, parse
from ctloop.monitors.alerts import AlertLedger, WebhookNotifier
from ctloop.monitors.delivery import deliver, read_batch
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile


def _drifting_outcome():
    rng = np.random.default_rng(0)
    reference = Reference(build_profile(pd.DataFrame({"x": rng.normal(0, 1, 500)}), numeric=["x"], categorical=[]),
                          "m", "1")
    monitor = DriftMonitor(reference, MonitorConfig(window=WindowPolicy(max_rows=200)))
    rows = [{"x": float(v)} for v in rng.normal(3, 1, 200)]
    [outcome] = monitor.add(PredictionBatch(model="m", rows=rows, predictions=[0] * 200, ts=datetime.now(UTC)))
    return outcome


def test_a_message_that_is_not_a_batch_is_dead_lettered_with_the_reason(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.publish("predictions", b"not json", key="m")
    [message] = bus.consumer(["predictions"], "g").poll(timeout_s=1)
    assert read_batch(bus, "dead", message) is None
    [dead] = bus.consumer(["dead"], "g").poll(timeout_s=1)
    assert dead.value == b"not json" and reason_of(dead)


def test_a_batch_is_read_and_nothing_is_dead_lettered(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    batch = PredictionBatch(model="m", rows=[{"x": 1.0}], predictions=[0], ts=datetime.now(UTC))
    bus.publish("predictions", batch.to_bytes(), key="m")
    [message] = bus.consumer(["predictions"], "g").poll(timeout_s=1)
    assert read_batch(bus, "dead", message) == batch
    assert bus.consumer(["dead"], "g").poll(timeout_s=0.1) == []


def test_a_drifting_window_publishes_its_event_and_sends_its_alert(tmp_path, webhook):
    bus = EmbeddedBus(tmp_path / "bus.db")
    outcome = _drifting_outcome()
    assert outcome.event is not None and outcome.alert is not None
    assert deliver(outcome, "m", bus, "drift", WebhookNotifier(webhook.url))
    [message] = bus.consumer(["drift"], "g").poll(timeout_s=1)
    assert message.key == b"m" and isinstance(parse(message.value).data, DriftDetected)
    assert webhook == [outcome.alert]


def test_without_a_notifier_the_event_still_goes_out(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    assert not deliver(_drifting_outcome(), "m", bus, "drift", None)
    assert len(bus.consumer(["drift"], "g").poll(timeout_s=1)) == 1


def test_with_a_ledger_an_alert_that_failed_is_kept_and_goes_out_with_the_next_window(tmp_path, webhook):
    bus = EmbeddedBus(tmp_path / "bus.db")
    ledger = AlertLedger((tmp_path / "store").as_uri())
    outcome = _drifting_outcome()

    assert not deliver(outcome, "m", bus, "drift", WebhookNotifier("http://127.0.0.1:9/down", timeout_s=1), ledger)
    kept = AlertLedger((tmp_path / "store").as_uri()).load("m")
    assert kept.pending == (outcome.alert,) and kept.state == outcome.episode and kept.state.in_episode

    quiet = replace(outcome, event=None, alert=None)
    assert not deliver(quiet, "m", bus, "drift", WebhookNotifier(webhook.url), ledger)
    assert webhook == [outcome.alert]
    assert AlertLedger((tmp_path / "store").as_uri()).load("m").pending == ()

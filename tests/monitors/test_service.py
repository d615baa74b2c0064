"""The monitor on a bus: a prediction stream that drifts halfway."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.bus import Bus
from ctloop.deadletter import reason_of
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import DriftDetected, parse
from ctloop.modelspec import DataSchema, Feature, ModelSpec, save_spec
from ctloop.monitors.alerts import AlertPolicy, WebhookNotifier
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.report import ReportSink
from ctloop.monitors.service import MonitorService, retrain_uri_for
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings, Topics

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW_ROWS = 400
BATCH_ROWS = 100
CLEAN_WINDOWS = 4
DRIFT_WINDOWS = 4


def _rows(rng: np.random.Generator, n: int, shift: float) -> list[dict]:
    frame = pd.DataFrame({
        "x": rng.normal(shift, 1.0, n),
        "y": rng.normal(10 + 3 * shift, 2.0, n),
        "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if not shift else [0.2, 0.3, 0.5]),
    })
    return frame.to_dict(orient="records")


def _reference() -> Reference:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(_rows(rng, 3000, 0.0))
    return Reference(build_profile(frame, numeric=["x", "y"], categorical=["c"]), "churn", "3")


def _publish_stream(bus: Bus, topic: str) -> int:
    """Clean windows, then drifted ones; batches one second apart. Returns the first drifted batch's index."""
    rng = np.random.default_rng(1)
    per_window = WINDOW_ROWS // BATCH_ROWS
    total = (CLEAN_WINDOWS + DRIFT_WINDOWS) * per_window
    shift_at = CLEAN_WINDOWS * per_window
    for i in range(total):
        shift = 1.0 if i >= shift_at else 0.0
        rows = _rows(rng, BATCH_ROWS, shift)
        batch = PredictionBatch(model="churn", version="3", rows=rows, predictions=[0] * len(rows),
                                ts=T0 + timedelta(seconds=i))
        bus.publish(topic, batch.to_bytes(), key="churn")
    bus.flush()
    return shift_at


def _settings(tmp_path: Path, prefix: str) -> Settings:
    topics = Topics(predictions=f"{prefix}.predictions", drift=f"{prefix}.drift", deadletter=f"{prefix}.dead")
    return Settings(home=tmp_path / "home", topics=topics)


def _service(bus: Bus, settings: Settings, webhook_url: str | None, sink: ReportSink | None = None) -> MonitorService:
    config = MonitorConfig(window=WindowPolicy(max_rows=WINDOW_ROWS), alerts=AlertPolicy(clean_windows=2))
    monitor = DriftMonitor(_reference(), config, sink=sink)
    notifier = WebhookNotifier(webhook_url) if webhook_url else None
    return MonitorService(bus, settings, monitor, notifier=notifier, group="monitor-test")


def _drain(service: MonitorService, windows: int, max_polls: int = 200) -> list:
    outcomes = []
    for _ in range(max_polls):
        outcomes += service.step(timeout_s=0.5)
        if len(outcomes) >= windows:
            break
    return outcomes


def _drift_events(bus: Bus, topic: str, expected: int) -> list:
    consumer = bus.consumer([topic], "drift-reader")
    events = []
    for _ in range(40):
        events += [parse(m.value) for m in consumer.poll(timeout_s=0.5)]
        if len(events) >= expected:
            break
    consumer.close()
    return events


def _check_halfway_drift(bus: Bus, settings: Settings, webhook, sink: ReportSink | None = None) -> list:
    _publish_stream(bus, settings.topics.predictions)
    service = _service(bus, settings, webhook.url, sink)
    try:
        outcomes = _drain(service, CLEAN_WINDOWS + DRIFT_WINDOWS)
    finally:
        service.close()
    assert [o.drifted for o in outcomes] == [False] * CLEAN_WINDOWS + [True] * DRIFT_WINDOWS
    shift_time = T0 + timedelta(seconds=CLEAN_WINDOWS * WINDOW_ROWS // BATCH_ROWS)
    events = _drift_events(bus, settings.topics.drift, DRIFT_WINDOWS)
    assert len(events) == DRIFT_WINDOWS
    for event in events:
        data = event.data
        assert isinstance(data, DriftDetected)
        assert data.window_start >= shift_time, "no drift event may cover the clean half"
        assert (data.model, data.version, data.rows, data.dataset_drift) == ("churn", "3", WINDOW_ROWS, True)
        assert set(data.columns) == {"x", "y", "c"} and data.drifted_share >= 0.5
        assert data.bad_rows == {"missing": 0, "extra": 0, "nan": 0, "wrong_type": 0}
    assert len(webhook) == 1, "one drift episode, one alert"
    assert webhook[0]["text"].startswith("Drift detected for model churn v3")
    return events


def test_stream_drifting_halfway_on_the_embedded_bus(tmp_path, webhook):
    settings = _settings(tmp_path, "emb")
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        sink = ReportSink(settings.store_root.as_uri())
        events = _check_halfway_drift(bus, settings, webhook, sink)
        first = events[0].data
        report = Path(first.report_uri.removeprefix("file://"))
        assert report.is_file() and report.is_relative_to(settings.store_root / "reports" / "churn")
        assert "<html" in report.read_text()[:2000].lower()
        assert first.data_uri is None, "the spec names no retrain_uri, so there is nothing labelled to retrain on"
        rows = Path(first.rows_uri.removeprefix("file://")).read_text().splitlines()
        assert len(rows) == WINDOW_ROWS and set(json.loads(rows[0])) == {"x", "y", "c"}
        assert bus.end_offsets(settings.topics.predictions) == 32
    finally:
        bus.close()


@pytest.mark.kafka
def test_stream_drifting_halfway_on_kafka(tmp_path, webhook, kafka_bus, unique_topic):
    _check_halfway_drift(kafka_bus, _settings(tmp_path, unique_topic), webhook)


def test_offsets_are_committed_only_for_closed_windows(tmp_path):
    settings = _settings(tmp_path, "commit")
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        rng = np.random.default_rng(2)
        for i in range(6):  # one full window (4 batches) and half of the next
            rows = _rows(rng, BATCH_ROWS, 0.0)
            bus.publish(settings.topics.predictions,
                        PredictionBatch(model="churn", rows=rows, predictions=[1] * BATCH_ROWS,
                                        ts=T0 + timedelta(seconds=i)).to_bytes())
        first = _service(bus, settings, None)
        assert len(_drain(first, 1, max_polls=4)) == 1
        first.step(timeout_s=0.1)
        first.close()
        again = _service(bus, settings, None)
        again.step(timeout_s=0.5)
        assert again.stats.messages == 2, "the open window's batches come back after a restart"
        assert again.monitor.windows.current.rows == 2 * BATCH_ROWS
        again.close()
    finally:
        bus.close()


def test_bad_messages_are_dead_lettered_and_other_models_and_shadow_batches_skipped(tmp_path):
    settings = _settings(tmp_path, "bad")
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        bus.publish(settings.topics.predictions, b"{not json")
        bus.publish(settings.topics.predictions,
                    PredictionBatch(model="other", rows=[{"x": 1}], predictions=[0]).to_bytes())
        bus.publish(settings.topics.predictions,
                    PredictionBatch(model="churn", rows=[{"x": 1}], predictions=[0], role="shadow").to_bytes())
        service = _service(bus, settings, None)
        service.step(timeout_s=0.5)
        service.close()
        dead = bus.consumer([settings.topics.deadletter], "dl").poll(timeout_s=0.5)
        assert len(dead) == 1 and "invalid prediction batch" in reason_of(dead[0])
        assert service.stats.dead_lettered == 1 and service.stats.rows == 0
        assert bus.consumer([settings.topics.predictions], "monitor-test").poll(timeout_s=0.1) == []
    finally:
        bus.close()


def test_the_retrain_uri_comes_from_the_spec_and_its_absence_is_said(tmp_path, caplog):
    settings = Settings(home=tmp_path)
    with caplog.at_level("WARNING", logger="ctloop.monitors.service"):
        assert retrain_uri_for("churn", settings) is None
    assert "no spec for model 'churn'" in caplog.text and "no data_uri" in caplog.text
    schema = DataSchema(features=(Feature(name="x"),), label="y")
    save_spec(ModelSpec(name="churn", data=schema), settings)
    caplog.clear()
    with caplog.at_level("WARNING", logger="ctloop.monitors.service"):
        assert retrain_uri_for("churn", settings) is None
    assert "sets no retrain_uri" in caplog.text
    save_spec(ModelSpec(name="churn", data=schema, retrain_uri="s3://b/recent/churn/"), settings)
    assert retrain_uri_for("churn", settings) == "s3://b/recent/churn/"

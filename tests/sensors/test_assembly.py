"""The sensor as `ctloop sensor run` and the demo assemble it."""

from __future__ import annotations

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.sensors.local.assembly import local_sensor
from ctloop.sensors.local.decisions import DecisionLog
from ctloop.settings import Settings
from tests.sensors.helpers import arrival, drain, drift
from tests.sensors.ledger import LedgerEngine


@pytest.fixture
def settings(tmp_path):
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    return settings


def test_it_listens_to_data_and_drift_events_and_snapshots_data_that_carries_no_digest(settings, tmp_path):
    data = tmp_path / "incoming"
    data.mkdir()
    (data / "part-0.csv").write_text("a,b\n1,2\n")
    bus = EmbeddedBus(settings.state_db)
    engine = LedgerEngine(tmp_path / "runs.db")
    bus.publish(settings.topics.data, arrival("churn", None, "ev-data", uri=data.as_uri() + "/"))
    bus.publish(settings.topics.drift, drift("fraud", "ev-drift", data_uri=data.as_uri() + "/"))
    sensor = local_sensor(settings, bus, engine, group="g1")
    try:
        drain(sensor)
        runs = {run["event_id"]: run for run in engine.runs()}
        assert set(runs) == {"ev-data", "ev-drift"}
        assert runs["ev-data"]["digest"] == runs["ev-drift"]["digest"] != ""
    finally:
        sensor.close()
    assert DecisionLog(settings.state_db, "g1").seen("ev-data"), "the group names the decision log"
    assert not DecisionLog(settings.state_db, "ctloop-sensor").seen("ev-data")
    engine.close()
    bus.close()

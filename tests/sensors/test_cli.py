"""The sensor commands through the real `ctloop` app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.settings import Settings
from tests.sensors.helpers import arrival, drain, drift, make_sensor
from tests.sensors.ledger import LedgerEngine


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTLOOP_BUS", "embedded")
    return Settings(home=tmp_path / "home")


runner = CliRunner()


def test_emit_data_arrived_publishes_to_the_data_topic(env):
    result = runner.invoke(app, ["emit", "data-arrived", "--model", "churn", "--uri", "s3://b/k", "--id", "ev-9"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ev-9"
    bus = EmbeddedBus(env.state_db)
    [message] = bus.consumer([env.topics.data], "t").poll(timeout_s=0.05)
    event = parse(message.value)
    assert (event.id, event.data.model, event.data.uri) == ("ev-9", "churn", "s3://b/k")
    bus.close()


def test_emit_rejects_an_invalid_event_by_name(env):
    result = runner.invoke(app, ["emit", "data-arrived", "--model", "", "--uri", "s3://b/k"])
    assert result.exit_code == 2
    assert "model" in result.output


def test_sensor_run_refuses_a_recent_events_bound_below_one(env):
    result = runner.invoke(app, ["sensor", "run", "--recent-events", "0"])
    assert result.exit_code != 0
    assert "--recent-events must be at least 1, got 0" in result.output


def test_events_list_shows_each_decision_with_its_reason(env, tmp_path):
    bus = EmbeddedBus(env.state_db)
    bus.publish(env.topics.data, arrival("churn", "abc", "ev-1"))
    bus.publish(env.topics.data, arrival("churn", "abc", "ev-2"))
    bus.publish(env.topics.drift, drift("churn", "ev-3", data_uri=None))
    engine = LedgerEngine(tmp_path / "runs.db")
    sensor = make_sensor(env, bus, engine)
    drain(sensor)
    sensor.close()
    result = runner.invoke(app, ["events", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert sorted((r["event_id"], r["kind"]) for r in rows) == [
        ("ev-1", "triggered"), ("ev-2", "deduped"), ("ev-3", "rejected")]
    text = runner.invoke(app, ["events", "list", "--model", "churn"]).output
    assert "triggered" in text and "deduped" in text and "already in the running" in text
    assert "drift event for churn carries no data_uri: set retrain_uri in the model's spec" in text
    bus.close()
    engine.close()


def test_sensor_render_prints_every_sensor_manifest(env):
    result = runner.invoke(app, ["sensor", "render"])
    assert result.exit_code == 0, result.output
    kinds = [line for line in result.output.splitlines() if line.startswith("kind: ")]
    # The five event sensors and, from the shipped specs (k8s/base/specs), churn's nightly schedule.
    assert kinds.count("kind: Sensor") == 6 and kinds.count("kind: EventSource") == 4
    assert kinds.count("kind: EventBus") == 1


def test_render_check_fails_on_stale_files_and_passes_once_written(env, tmp_path):
    pytest.importorskip("ctloop.workflows.render", reason="ctloop.workflows.render not landed yet")
    out = tmp_path / "generated"
    stale = runner.invoke(app, ["render", "--dir", str(out), "--check"])
    assert stale.exit_code == 1
    assert "stale" in stale.output
    written = runner.invoke(app, ["render", "--dir", str(out)])
    assert written.exit_code == 0, written.output
    assert (out / "workflow-template.yaml").is_file() and (out / "sensor-data-arrived.yaml").is_file()
    assert runner.invoke(app, ["render", "--dir", str(out), "--check"]).exit_code == 0
    (out / "sensor-drift.yaml").write_text("edited\n")
    assert runner.invoke(app, ["render", "--dir", str(out), "--check"]).exit_code == 1

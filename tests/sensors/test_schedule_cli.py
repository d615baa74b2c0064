"""`ctloop events list` and `ctloop models show` show each model's schedule, next tick and last tick decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.deploy.registry import Registry
from ctloop.embedded_bus import EmbeddedBus
from ctloop.modelspec import DataSchema, Feature, ModelSpec, Schedule, save_spec
from ctloop.sensors.catalog import local_sensors
from ctloop.sensors.local.sensor import LocalSensor, snapshot_digest
from ctloop.settings import Settings
from ctloop.version import code_version
from tests.sensors.ledger import LedgerEngine

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTLOOP_BUS", "embedded")
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "batch.csv").write_text("x,y\n1,0\n2,1\n")
    settings = Settings(home=tmp_path / "home")
    save_spec(ModelSpec(name="churn", data=DataSchema(features=(Feature(name="x"),), label="y"),
                        schedule=Schedule(cron="30 2 * * *", timezone="Europe/Berlin", data_uri=f"file://{landing}/")),
              settings)
    return settings


def run_through_two_nights(settings: Settings, tmp_path) -> None:
    """The sensor as `ctloop sensor run` assembles it, with a clock from 2026-06-01 12:00 to 06-03 12:00 CEST:
    ticks at 02:30 on the 2nd (trains) and the 3rd (unchanged)."""
    now = [datetime(2026, 6, 1, 10, tzinfo=UTC).timestamp()]
    bus, engine = EmbeddedBus(settings.state_db), LedgerEngine(tmp_path / "runs.db")
    sensor = LocalSensor(settings, bus, engine, local_sensors(settings, code_version()), clock=lambda: now[0],
                         resolve_digest=snapshot_digest(settings))
    while now[0] < datetime(2026, 6, 3, 10, tzinfo=UTC).timestamp():
        sensor.step(0)
        now[0] += timedelta(hours=1).total_seconds()
    sensor.close()
    bus.close()
    engine.close()


def test_events_list_starts_with_the_schedule_its_next_tick_and_the_last_ticks(home, tmp_path):
    before = runner.invoke(app, ["events", "list"])
    assert before.exit_code == 0, before.output
    assert "schedule churn: cron '30 2 * * *' Europe/Berlin on file://" in before.output
    assert "no tick yet (the sensor arms the schedule when it starts)" in before.output
    run_through_two_nights(home, tmp_path)
    text = runner.invoke(app, ["events", "list", "--model", "churn"]).output
    lines = text.splitlines()
    assert lines[1].startswith("  next tick ") and "last tick 2026-06-03T00:30:00Z" in lines[1]
    assert lines[2].split()[1:3] == ["2026-06-03T00:30:00Z", "deduped"] and "no change since the last run" in lines[2]
    assert lines[3].split()[1:3] == ["2026-06-02T00:30:00Z", "triggered"]
    next_tick = datetime.strptime(lines[1].split()[2].rstrip(";"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert next_tick > datetime.now(UTC) and (next_tick.hour, next_tick.minute) in ((0, 30), (1, 30))
    rows = [json.loads(line) for line in runner.invoke(app, ["events", "list", "--json"]).output.splitlines()]
    assert [r["kind"] for r in rows] == ["deduped", "triggered"], "JSON lines stay decision rows only"


def test_models_show_has_a_schedule_section(home, tmp_path):
    Registry(home.tracking_uri).ensure_model("churn")
    run_through_two_nights(home, tmp_path)
    shown = runner.invoke(app, ["models", "show", "churn", "--json"])
    assert shown.exit_code == 0, shown.output
    schedule = json.loads(shown.output)["schedule"]
    assert (schedule["schedule"], schedule["last_tick"], schedule["missed_before_last"]) == (
        "cron '30 2 * * *' Europe/Berlin", "2026-06-03T00:30:00Z", 0)
    assert [r["kind"] for r in schedule["recent"]] == ["deduped", "triggered"]
    text = runner.invoke(app, ["models", "show", "churn"]).output
    assert "schedule churn: cron '30 2 * * *' Europe/Berlin" in text and "last tick 2026-06-03T00:30:00Z" in text


def test_a_model_without_a_schedule_shows_none(home):
    Registry(home.tracking_uri).ensure_model("plain")
    shown = runner.invoke(app, ["models", "show", "plain", "--json"])
    assert shown.exit_code == 0, shown.output
    assert "schedule" not in json.loads(shown.output)

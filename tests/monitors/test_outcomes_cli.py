"""`ctloop outcomes run|status` on the embedded bus: served rows and labels in, the store's counts out; bad
options end as one line and exit code 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import LabelObserved, new_event, to_bytes
from ctloop.modelspec import DataSchema, Feature, ModelSpec, save_spec
from ctloop.monitors.outcomes_landing import LANDED_OBJECT
from ctloop.predictions import PredictionBatch
from ctloop.settings import Settings

runner = CliRunner()


def test_run_joins_lands_and_reports_then_status_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path))
    settings = Settings(home=tmp_path)
    save_spec(ModelSpec(name="churn", retrain_uri=(tmp_path / "live").as_uri() + "/",
                        data=DataSchema(features=(Feature(name="x"),), label="y", min_rows=5)), settings)
    bus = EmbeddedBus(settings.state_db)
    served = datetime.now(UTC) - timedelta(minutes=1)
    bus.publish(settings.topics.predictions, PredictionBatch(
        model="churn", version="1", rows=[{"x": float(i)} for i in range(8)], predictions=[i % 2 for i in range(8)],
        ids=[f"p{i}" for i in range(8)], ts=served).to_bytes())
    for i in range(6):
        bus.publish(settings.topics.labels, to_bytes(new_event(
            LabelObserved(prediction_id=f"p{i}", label=1, observed_at=served + timedelta(seconds=30)))))
    bus.publish(settings.topics.labels, b"{}")
    bus.close()

    result = runner.invoke(app, ["outcomes", "run", "--duration", "3", "--evaluate-every", "0.5"])
    assert result.exit_code == 0, result.output
    assert "churn v1: 6 labelled rows accuracy=0.5000" in result.output
    assert "6 joined, 0 pending, 0 late, 0 duplicate" in result.output
    assert "1 dead-lettered" in result.output
    assert (tmp_path / "live" / LANDED_OBJECT).is_file()
    status = runner.invoke(app, ["outcomes", "status"])
    assert status.output.strip() == "8 predictions; labels: 6 joined rows, 0 pending, 0 late, 0 duplicate"


@pytest.mark.parametrize(("args", "env", "held"), [
    ([], {}, "500,000"), (["--memory-rows", "3"], {}, "3"), ([], {"CTLOOP_OUTCOMES_MEMORY_ROWS": "5"}, "5"),
    (["--memory-rows", "3"], {"CTLOOP_OUTCOMES_MEMORY_ROWS": "5"}, "3"),
])
def test_run_holds_the_newest_rows_it_is_told_in_memory_and_joins_older_ones_from_the_store(
        tmp_path, monkeypatch, args, env, held):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path)
    bus = EmbeddedBus(settings.state_db)
    served = datetime.now(UTC) - timedelta(minutes=1)
    for b in range(4):  # four batches of two rows: a bound of 3 or 5 leaves the first ones to the store
        bus.publish(settings.topics.predictions, PredictionBatch(
            model="churn", version="1", rows=[{"x": 1.0}, {"x": 2.0}], predictions=[0, 1],
            ids=[f"b{b}-0", f"b{b}-1"], ts=served).to_bytes())
    bus.close()
    first = runner.invoke(app, ["outcomes", "run", "--duration", "1.5", *args])
    assert first.exit_code == 0, first.output
    assert f"(the newest {held} served rows in memory)" in first.output
    bus = EmbeddedBus(settings.state_db)
    for b in range(4):
        bus.publish(settings.topics.labels, to_bytes(new_event(
            LabelObserved(prediction_id=f"b{b}-1", label=1, observed_at=served + timedelta(seconds=30)))))
    bus.close()
    second = runner.invoke(app, ["outcomes", "run", "--duration", "1.5", *args])
    assert second.exit_code == 0, second.output
    assert "4 joined, 0 pending, 0 late, 0 duplicate" in second.output


@pytest.mark.parametrize(("args", "problem"), [
    (["run", "--horizon", "soon"], "--horizon: interval 'soon' is not a duration"),
    (["run", "--bus", "rabbit"], "--bus must be kafka or embedded"),
    (["run", "--land-rows", "0"], "--land-rows must be at least 1"),
    (["run", "--memory-rows", "0"], "--memory-rows must be at least 1"),
    (["status", "--store", "postgresql://db/x"], "is not supported: use sqlite:///<path>"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, monkeypatch, args, problem):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path))
    result = runner.invoke(app, ["outcomes", *args])
    assert result.exit_code == 2, result.output
    assert problem in result.output

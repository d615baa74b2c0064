from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.modelspec import DataSchema, Feature, ModelSpec, save_spec
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings

runner = CliRunner()


def _frame(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    return pd.DataFrame({"x": rng.normal(shift, 1, n), "c": rng.choice(["a", "b", "c"], n)})


def test_check_prints_a_table_writes_the_report_and_exits_1_on_drift(tmp_path):
    rng = np.random.default_rng(0)
    _frame(rng, 1500, 0).to_csv(tmp_path / "ref.csv", index=False)
    _frame(rng, 300, 2).to_parquet(tmp_path / "cur.parquet")
    result = runner.invoke(app, ["monitor", "check", "--reference", str(tmp_path / "ref.csv"),
                                 "--current", str(tmp_path / "cur.parquet"), "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 1, result.output
    assert "wasserstein" in result.output and "jensenshannon" in result.output
    assert "dataset drift DETECTED" in result.output
    assert "drifted share 0.50" in result.output
    assert (tmp_path / "r.html").read_text().lower().lstrip().startswith("<!doctype html>")


def test_check_exits_0_without_drift_and_names_a_bad_file(tmp_path):
    rng = np.random.default_rng(1)
    _frame(rng, 800, 0).to_csv(tmp_path / "ref.csv", index=False)
    _frame(rng, 300, 0).to_csv(tmp_path / "cur.csv", index=False)
    ok = runner.invoke(app, ["monitor", "check", "--reference", str(tmp_path / "ref.csv"),
                             "--current", str(tmp_path / "cur.csv")])
    assert ok.exit_code == 0, ok.output
    assert "ks" in ok.output and "chisquare" in ok.output
    bad = runner.invoke(app, ["monitor", "check", "--reference", str(tmp_path / "nope.csv"),
                              "--current", str(tmp_path / "cur.csv")])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_run_on_the_embedded_bus_publishes_drift_events(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    settings = Settings()
    rng = np.random.default_rng(2)
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(build_profile(_frame(rng, 2000, 0), numeric=["x"], categorical=["c"]).to_json())
    settings.state_db.parent.mkdir(parents=True)
    retrain = (tmp_path / "recent" / "m").as_uri() + "/"
    schema = DataSchema(features=(Feature(name="x"), Feature(name="c", kind="categorical")), label="y")
    save_spec(ModelSpec(name="m", data=schema, retrain_uri=retrain), settings)
    bus = EmbeddedBus(settings.state_db)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, shift in enumerate([0, 0, 3, 3]):
        rows = _frame(rng, 1500, shift).to_dict(orient="records")
        bus.publish(settings.topics.predictions, PredictionBatch(
            model="m", version="1", rows=rows, predictions=[0] * 1500, ts=t0 + timedelta(minutes=i)).to_bytes())
    result = runner.invoke(app, ["monitor", "run", "--model", "m", "--bus", "embedded", "--profile", str(profile_path),
                                 "--window-rows", "1500", "--duration", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.count("[ok]") == 2 and result.output.count("[DRIFT]") == 2
    events = [parse(m.value) for m in bus.consumer([settings.topics.drift], "t").poll(timeout_s=1)]
    assert [e.data.model for e in events] == ["m", "m"]
    assert all(e.data.report_uri and e.data.report_uri.startswith("file://") for e in events)
    assert [e.data.data_uri for e in events] == [retrain, retrain], "drift runs retrain on the spec's retrain_uri"
    assert all(e.data.rows_uri and e.data.rows_uri.endswith(".jsonl") for e in events)
    bus.close()


def test_run_without_model_watches_the_one_model_with_a_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    settings = Settings()
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(build_profile(_frame(np.random.default_rng(3), 500, 0), numeric=["x"],
                                          categorical=["c"]).to_json())
    save_spec(ModelSpec(name="churn", data=DataSchema(features=(Feature(name="x"),), label="y")), settings)
    result = runner.invoke(app, ["monitor", "run", "--bus", "embedded", "--profile", str(profile_path),
                                 "--duration", "0.5"])
    assert result.exit_code == 0, result.output
    assert "monitoring churn on embedded:" in result.output


def test_run_without_model_is_refused_unless_exactly_one_spec_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    settings = Settings()
    none = runner.invoke(app, ["monitor", "run", "--bus", "embedded", "--duration", "0.5"])
    assert none.exit_code == 2, none.output
    assert "--model is required: there is no spec under" in none.output
    for name in ("churn", "fraud"):
        save_spec(ModelSpec(name=name, data=DataSchema(features=(Feature(name="x"),), label="y")), settings)
    two = runner.invoke(app, ["monitor", "run", "--bus", "embedded", "--duration", "0.5"])
    assert two.exit_code == 2, two.output
    assert "--model is required: the specs under" in two.output and "name churn, fraud;" in two.output

"""`ctloop run retrain` and `ctloop runs list|show` on the local engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.modelspec import save_spec
from ctloop.settings import Settings
from tests.trainer.conftest import make_frame, make_spec


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CTLOOP_HOME", str(home))
    monkeypatch.setenv("CTLOOP_ENGINE", "local")
    monkeypatch.setenv("CTLOOP_BUS", "embedded")
    monkeypatch.chdir(tmp_path)
    save_spec(make_spec(epochs=2), Settings(home=home))
    return home


def test_retrain_then_list_and_show_the_run(home: Path, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    make_frame(300).to_parquet(data / "part-0.parquet", index=False)
    runner = CliRunner()
    started = runner.invoke(app, ["run", "retrain", "--model", "churn", "--data", str(data), "--event-id", "evt-cli"])
    assert started.exit_code == 0, started.output
    handle = json.loads(started.stdout.strip().splitlines()[-1])
    assert handle["status"] == "Succeeded"

    again = runner.invoke(app, ["run", "retrain", "--model", "churn", "--data", str(data), "--event-id", "evt-2"])
    assert again.exit_code == 3 and "already exists" in again.output

    listed = runner.invoke(app, ["runs", "list"])
    assert listed.exit_code == 0 and handle["run_id"] in listed.stdout and "Succeeded" in listed.stdout

    shown = runner.invoke(app, ["runs", "show", handle["run_id"]])
    record = json.loads(shown.stdout)
    assert record["trigger_event_id"] == "evt-cli"
    assert [s["name"] for s in record["steps"]][:4] == ["snapshot", "validate", "train", "evaluate"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "retrain", "--model", "nope", "--data", "."], "no spec for model 'nope'"),
    (["run", "retrain", "--model", "churn", "--data", ".", "--param", "epochs"], "--param expects NAME=VALUE"),
    (["run", "retrain", "--model", "churn", "--data", ".", "--engine", "k8s"], "--engine must be local or argo"),
    (["runs", "show", "missing-run"], "no run with id 'missing-run'"),
])
def test_bad_input_is_named(home: Path, args: list[str], message: str):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output

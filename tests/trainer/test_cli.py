"""`ctloop train` and `ctloop validate` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.modelspec import save_spec
from ctloop.settings import Settings
from tests.trainer.conftest import make_frame, make_spec


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CTLOOP_MLFLOW_TRACKING_URI", raising=False)
    save_spec(make_spec(epochs=2), Settings(home=tmp_path / "home"))
    return tmp_path / "home"


def test_train_by_hand_prints_the_run_and_logs_it(home: Path, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--model", "churn", "--event-id", "manual-1"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    run_id = lines["run id"].strip()
    assert '"accuracy"' in lines["metrics"] and len(lines["data digest"].strip()) == 64
    run = MlflowClient(Settings(home=home).tracking_uri).get_run(run_id)
    assert run.data.tags["ctloop.event_id"] == "manual-1"
    assert run.info.artifact_uri.startswith((home / "mlartifacts").resolve().as_uri())


def test_train_refuses_invalid_data_and_names_the_problem(home: Path, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    make_frame(100).drop(columns=["x1"]).to_csv(tmp_path / "bad" / "a.csv", index=False)
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "bad"), "--model", "churn"])
    assert result.exit_code == 1
    assert "a.csv: column 'x1': rule column_present" in result.output


def test_validate_prints_a_report(home: Path, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--data", dataset.as_uri(), "--model", "churn"])
    assert result.exit_code == 0, result.output
    assert '"rows": 400' in result.output


def test_an_unknown_model_is_an_error(home: Path, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--model", "nope"])
    assert result.exit_code == 2 and "no spec for model 'nope'" in result.output

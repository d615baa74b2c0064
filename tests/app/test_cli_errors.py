"""Every command meets every known failure the same way: one line on stderr that names the problem and the fix,
no traceback, exit 1 when it tried and failed, exit 2 when it refused its input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.kafka_local import free_port
from ctloop.modelspec import save_spec, spec_path
from ctloop.profile import build_profile
from ctloop.settings import Settings
from tests.trainer.conftest import make_frame, make_spec, write_dataset

CLOSED_PORT = free_port()  # nothing listens there: a broker or registry that is down
BROKER_DOWN = {"CTLOOP_BUS": "kafka", "CTLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED_PORT}",
               "CTLOOP_KAFKA_CONNECT_TIMEOUT_S": "0.3"}
REGISTRY_DOWN = {"CTLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{CLOSED_PORT}"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ctloop home with the `churn` spec, its data under data/, a reference profile, and nothing in the env."""
    for name in ("CTLOOP_BUS", "CTLOOP_KAFKA_BOOTSTRAP", "CTLOOP_MLFLOW_TRACKING_URI", "CTLOOP_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CTLOOP_HOME", str(home))
    monkeypatch.setenv("CTLOOP_WEBHOOK_TOKEN", "secret")
    save_spec(make_spec(epochs=1), Settings(home=home))
    write_dataset(tmp_path / "data")
    (tmp_path / "profile.json").write_text(build_profile(make_frame(200), numeric=["x1", "x2"],
                                                         categorical=["color"]).to_json())
    make_frame(50).to_csv(tmp_path / "current.csv", index=False)
    return home


def _fails(args: list[str], env: dict[str, str], exit_code: int, *named: str):
    result = CliRunner().invoke(app, args, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for words in named:
        assert words in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args", [
    ["emit", "data-arrived", "--model", "churn", "--uri", "file:///data/a.csv"],
    ["promote", "churn", "1", "--reason", "by hand"],
    ["rollback", "churn"],
    ["serve", "--model", "churn", "--port", "0"],
    ["sensor", "run"],
    ["sensor", "webhook", "--port", "0"],
    ["sensor", "poll-s3", "s3://bucket/prefix/", "--model", "churn", "--once"],
    ["monitor", "run", "--model", "churn", "--duration", "1"],
], ids=lambda args: " ".join(args[:2]))
def test_no_broker_names_the_address_and_how_to_start_one(home, args):
    _fails(args, BROKER_DOWN, 1, f"no Kafka broker answered at 127.0.0.1:{CLOSED_PORT}", "ctloop kafka up")


@pytest.mark.parametrize("args", [
    ["models", "list"],
    ["models", "show", "churn"],
    ["promote", "churn", "1", "--reason", "by hand"],
    ["rollback", "churn"],
    ["monitor", "run", "--model", "churn", "--duration", "1"],
    ["train", "--model", "churn", "--data", "{data}"],
], ids=lambda args: " ".join(args[:2]))
def test_no_registry_names_the_uri_and_what_to_check(home, tmp_path, args):
    args = [a.format(data=tmp_path / "data") for a in args]
    _fails(args, REGISTRY_DOWN, 1, f"registry http://127.0.0.1:{CLOSED_PORT} unavailable", "Connection refused",
           "CTLOOP_MLFLOW_TRACKING_URI")


@pytest.mark.parametrize("args", [
    ["train", "--model", "churn", "--data", "{data}"],
    ["validate", "--model", "churn", "--data", "{data}"],
    ["run", "retrain", "--model", "churn", "--data", "{data}"],
    ["monitor", "run", "--model", "churn", "--profile", "{profile}", "--duration", "1"],
    ["sensor", "run"],
], ids=lambda args: " ".join(args[:2]))
def test_a_bad_spec_names_the_file_and_the_field(home, tmp_path, args):
    spec = spec_path("churn", Settings(home=home))
    spec.write_text(spec.read_text().replace('"epochs": 1', '"epochs": -1'))
    args = [a.format(data=tmp_path / "data", profile=tmp_path / "profile.json") for a in args]
    _fails(args, {}, 2, f"{spec}: train.epochs: Input should be greater than or equal to 1")


@pytest.mark.parametrize(("args", "exit_code", "named"), [
    (["train", "--model", "churn", "--data", "{missing}"], 2, ("no .parquet or .csv objects under {missing}",
                                                              "check --data")),
    (["validate", "--model", "churn", "--data", "{missing}"], 2, ("no .parquet or .csv objects under {missing}",)),
    (["run", "retrain", "--model", "churn", "--data", "{missing}"], 2, ("no .parquet or .csv objects under {missing}",
                                                                       "check --data")),
    (["train", "--model", "churn", "--data", "{unreadable}"], 1, ("unreadable.csv", "fix the data")),
    (["train", "--model", "nope", "--data", "{missing}"], 2, ("no spec for model 'nope'", "write the model's spec")),
    (["monitor", "run", "--model", "churn", "--profile", "{missing}"], 2, ("no reference profile file at {missing}",)),
    (["monitor", "check", "--reference", "{missing}", "--current", "{current}"], 2, ("no such file: {missing}",)),
    (["runs", "show", "no-such-run"], 2, ("no run with id 'no-such-run'", "ctloop runs list")),
], ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None)
def test_missing_data_is_named_where_it_was_looked_for(home, tmp_path, args, exit_code, named):
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "unreadable.csv").write_bytes(b"\xff\xfe\x00 not a table")
    paths = {"missing": tmp_path / "missing", "current": tmp_path / "current.csv",
             "unreadable": tmp_path / "unreadable"}
    _fails([a.format(**paths) for a in args], {}, exit_code, *(n.format(**paths) for n in named))


@pytest.mark.parametrize(("args", "env", "named"), [
    (["run", "retrain", "--model", "churn", "--data", ".", "--engine", "k8s"], {}, "--engine must be local or argo"),
    (["serve", "--model", "churn", "--poll", "0"], {}, "--poll must be positive"),
    (["monitor", "run", "--bus", "rabbit"], {}, "--bus must be kafka or embedded"),
    (["sensor", "webhook"], {"CTLOOP_WEBHOOK_TOKEN": ""}, "set CTLOOP_WEBHOOK_TOKEN"),
    (["emit", "data-arrived", "--model", "", "--uri", "s3://b/k"], {}, "model: String should have at least 1"),
    (["events", "list"], {"CTLOOP_BUS": "rabbit"}, "invalid settings: bus"),
    (["demo", "--kafka", "localhost"], {}, "--kafka expects HOST:PORT"),
], ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None)
def test_a_bad_argument_is_refused_by_name(home, args, env, named):
    _fails(args, env, 2, named)


def test_a_bug_keeps_its_traceback(home, monkeypatch):
    import ctloop.modelspec

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ctloop.modelspec, "load_spec", broken)
    result = CliRunner().invoke(app, ["run", "retrain", "--model", "churn", "--data", "."])
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.stderr


def test_the_console_script_reports_the_same_line(home, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([str(Path(sys.executable).with_name("ctloop")), "runs", "show", "no-such-run"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no run with id 'no-such-run'; `ctloop runs list` shows the runs there are"

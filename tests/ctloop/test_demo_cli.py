"""`ctloop demo` as a user runs it: the whole story on the embedded default, its JSON summary, and resume."""

import json

import pytest
from typer.testing import CliRunner

from ctloop.cli import app


def test_a_malformed_kafka_address_is_refused():
    result = CliRunner().invoke(app, ["demo", "--kafka", "localhost"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_a_home_that_is_not_a_demo_home_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--home", str(tmp_path), "--quiet"])
    assert result.exit_code == 1
    assert "not a demo home" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "home"


@pytest.fixture(scope="module")
def first_run(demo_home):
    result = CliRunner().invoke(app, ["demo", "--home", str(demo_home), "--json"])
    return result


@pytest.mark.e2e
def test_the_demo_keeps_the_story_on_the_embedded_default(first_run, demo_home):
    assert first_run.exit_code == 0, first_run.output
    summary = json.loads(first_run.stdout)
    assert summary["start"].startswith("starting clean")
    assert summary["bus"] == "embedded"
    assert summary["tracking_uri"] == f"sqlite:///{demo_home.resolve() / 'mlflow.db'}"
    assert all(check["ok"] for check in summary["checks"]), summary["checks"]
    assert len(summary["versions"]) >= 3
    assert summary["champion"] == next(v["version"] for v in summary["versions"] if v["trigger"] == "drift")
    assert any(step.startswith("mlflow ui --backend-store-uri sqlite:///") for step in summary["next_steps"])
    assert summary["reports"] and all(path.endswith(".html") for path in summary["reports"])


@pytest.mark.e2e
def test_resume_after_a_finished_demo_reruns_nothing_and_says_so(first_run, demo_home):
    assert first_run.exit_code == 0, first_run.output
    before = json.loads(first_run.stdout)
    again = CliRunner().invoke(app, ["demo", "--home", str(demo_home), "--json", "--resume"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["start"].startswith("resuming")
    assert [r["id"] for r in summary["runs"]] == [r["id"] for r in before["runs"]]
    assert [v["version"] for v in summary["versions"]] == [v["version"] for v in before["versions"]]

"""`ctloop demo` as a user runs it: refusals, then one story on the embedded default that is interrupted,
resumed by `ctloop demo --resume --json`, and resumed once more with nothing left to do."""

import json

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.app.demo.journal import load_journal
from ctloop.app.demo.narration import Silent
from ctloop.app.demo.runner import DemoOptions, run_demo


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


class _Interrupted(Exception):
    pass


class _StopsAtStage(Silent):
    """A narrator whose user pressed ^C as stage `number` began."""

    def __init__(self, number: int) -> None:
        self.number = number

    def stage(self, number: int, title: str) -> None:
        if number == self.number:
            raise _Interrupted(title)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The demo interrupted as stage 3 began, then finished by `ctloop demo --resume --json`."""
    home = tmp_path_factory.mktemp("demo") / "home"
    with pytest.raises(_Interrupted):
        run_demo(DemoOptions(home=home), _StopsAtStage(3))
    journal = load_journal(home)
    assert journal is not None and journal.done == ["bootstrap", "burst"]
    return home, CliRunner().invoke(app, ["demo", "--home", str(home), "--json", "--resume"])


@pytest.mark.e2e
def test_a_resumed_demo_finishes_the_story_on_the_embedded_default(resumed):
    home, result = resumed
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["start"].startswith("resuming") and "bootstrap, burst" in summary["start"]
    assert summary["bus"] == "embedded"
    assert summary["tracking_uri"] == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert [c["name"] for c in summary["checks"] if not c["ok"]] == []
    assert [r["trigger"] for r in summary["runs"]] == ["data", "data", "drift"]
    assert summary["champion"] == next(v["version"] for v in summary["versions"] if v["trigger"] == "drift")
    assert any(step.startswith("mlflow ui --backend-store-uri sqlite:///") for step in summary["next_steps"])
    assert summary["reports"] and all(path.endswith(".html") for path in summary["reports"])


@pytest.mark.e2e
def test_resuming_a_finished_demo_reruns_nothing_and_says_so(resumed):
    home, first = resumed
    assert first.exit_code == 0, first.output
    before = json.loads(first.stdout)
    again = CliRunner().invoke(app, ["demo", "--home", str(home), "--json", "--resume"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["start"].startswith("resuming") and "manual" in summary["start"]
    assert [r["id"] for r in summary["runs"]] == [r["id"] for r in before["runs"]]
    assert [v["version"] for v in summary["versions"]] == [v["version"] for v in before["versions"]]

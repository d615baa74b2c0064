"""Where the demo keeps its state, and how it tells the `ctloop` commands about it."""

from pathlib import Path

import pytest

from ctloop.app.demo.journal import Journal, load_journal, save_journal
from ctloop.app.demo.runner import DemoError, DemoOptions, demo_settings, prepare_home, settings_env
from ctloop.settings import Settings


def _demo_home(path: Path, done: tuple[str, ...] = ("bootstrap",)) -> Path:
    save_journal(path, Journal(model="renewals", bus="embedded", done=list(done)))
    (path / "state.db").write_bytes(b"old state")
    return path


def test_clean_is_the_default_and_removes_a_previous_demo(tmp_path):
    home = _demo_home(tmp_path / "demo")
    journal, said = prepare_home(home, resume=False)
    assert journal is None
    assert "starting clean" in said and "removed" in said
    assert not home.exists() or not any(home.iterdir())


def test_resume_continues_from_the_journal(tmp_path):
    home = _demo_home(tmp_path / "demo", done=("bootstrap", "burst"))
    journal, said = prepare_home(home, resume=True)
    assert journal is not None and journal.done == ["bootstrap", "burst"]
    assert said.startswith("resuming") and "bootstrap, burst" in said
    assert (home / "state.db").read_bytes() == b"old state"


def test_resume_with_nothing_to_resume_starts_clean_and_says_so(tmp_path):
    journal, said = prepare_home(tmp_path / "fresh", resume=True)
    assert journal is None
    assert said.startswith("starting clean") and "nothing to resume" in said


def test_a_directory_that_is_not_a_demo_home_is_never_deleted(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not a demo home"):
        prepare_home(tmp_path, resume=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_kafka_topics_get_the_run_suffix_and_the_embedded_ones_do_not(tmp_path):
    kafka = demo_settings(DemoOptions(home=tmp_path, kafka="127.0.0.1:9092"),
                          Journal(model="m", bus="kafka", topic_suffix=".demo-ab12"))
    assert kafka.bus == "kafka" and kafka.kafka_bootstrap == "127.0.0.1:9092"
    assert kafka.topics.data == "ctloop.data.demo-ab12"
    assert kafka.topics.predictions == "ctloop.predictions.demo-ab12"
    embedded = demo_settings(DemoOptions(home=tmp_path), Journal(model="m", bus="embedded"))
    assert embedded.bus == "embedded" and embedded.topics.data == "ctloop.data"
    assert embedded.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"


def test_the_environment_gives_a_command_the_same_settings(tmp_path, monkeypatch):
    settings = demo_settings(DemoOptions(home=tmp_path, kafka="10.0.0.1:9999", tracking_uri="http://127.0.0.1:5000"),
                             Journal(model="m", bus="kafka", topic_suffix=".demo-x"))
    for name, value in settings_env(settings).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    seen = Settings()
    assert seen.home == settings.home
    assert seen.bus == "kafka" and seen.kafka_bootstrap == "10.0.0.1:9999"
    assert seen.topics == settings.topics
    assert seen.tracking_uri == "http://127.0.0.1:5000"


def test_the_demo_ignores_a_registry_and_store_set_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CTLOOP_MLFLOW_TRACKING_URI", "http://production-mlflow:5000")
    monkeypatch.setenv("CTLOOP_S3_ENDPOINT_URL", "http://production-minio:9000")
    monkeypatch.setenv("CTLOOP_BUS", "kafka")
    settings = demo_settings(DemoOptions(home=tmp_path), Journal(model="m", bus="embedded"))
    assert settings.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert settings.s3_endpoint_url is None and settings.bus == "embedded"
    env = settings_env(settings)
    assert env["CTLOOP_MLFLOW_TRACKING_URI"] is None and env["CTLOOP_S3_ENDPOINT_URL"] is None


def test_the_journal_round_trips(tmp_path):
    journal = Journal(model="m", bus="embedded", done=["bootstrap"], alerts=[{"text": "drift"}])
    save_journal(tmp_path, journal)
    assert load_journal(tmp_path) == journal
    assert load_journal(tmp_path / "elsewhere") is None


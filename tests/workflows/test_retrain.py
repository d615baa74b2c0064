"""The real retrain template on the local engine, with the real trainer, registry and promotion code.

One home (a SQLite MLflow, the embedded bus) for the module: the first run makes a champion that
the later runs are judged against.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.modelspec import PromotionPolicy, save_spec
from ctloop.settings import Settings
from ctloop.version import code_version
from ctloop.workflows.engine import AlreadyRan, RunRequest
from ctloop.workflows.local.engine import LocalEngine
from tests.trainer.conftest import make_frame, make_spec

MODEL = "churn"


def write_data(directory: Path, *, seed: int, rows: int = 300) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    make_frame(rows, seed=seed).to_parquet(directory / "part-0.parquet", index=False)
    return str(directory)


def events(settings: Settings, topic: str) -> list:
    consumer = EmbeddedBus(settings.state_db).consumer([topic], f"test-{uuid.uuid4()}")
    return [parse(m.value) for m in consumer.poll(1.0, 1000)]


def version_tags(settings: Settings, version: str) -> dict[str, str]:
    return MlflowClient(settings.tracking_uri).get_model_version(MODEL, version).tags


def champion(settings: Settings) -> str | None:
    aliases = MlflowClient(settings.tracking_uri).get_registered_model(MODEL).aliases
    return str(aliases["champion"]) if "champion" in aliases else None


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrain")


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    settings = Settings(home=home / "home")
    save_spec(make_spec(epochs=3), settings)
    return settings


@pytest.fixture(scope="module")
def green(settings: Settings, home: Path):
    engine = LocalEngine(settings)
    data = write_data(home / "data-a", seed=0)
    handle = engine.submit(RunRequest(model=MODEL, data_uri=data, trigger_event_id="evt-green", trigger="data"))
    return engine, handle, data


def test_a_green_run_trains_registers_with_provenance_and_promotes(green, settings):
    engine, handle, _ = green
    run = engine.run(handle.run_id)
    assert handle.status == "Succeeded", run.error
    assert [(s.name, s.status) for s in run.steps] == [
        ("snapshot", "Succeeded"), ("validate", "Succeeded"), ("train", "Succeeded"), ("evaluate", "Succeeded"),
        ("promote", "Succeeded"), ("register", "Skipped"), ("onExit.run-finished", "Succeeded")]
    version = run.step("promote").outputs["version"]
    assert champion(settings) == version
    tags = version_tags(settings, version)
    train = run.step("train").outputs
    assert tags["ctloop.event_id"] == "evt-green"
    assert tags["ctloop.data_digest"] == run.step("snapshot").outputs["digest"] == train["data-digest"]
    assert tags["ctloop.code_version"] == code_version()
    assert tags["ctloop.run_id"] == train["run-id"]
    assert tags["ctloop.decision"] == "promote"
    assert (settings.home / "workflows" / "locks" / f"ctloop-promote-{MODEL}.lock").is_file()
    [finished] = [e for e in events(settings, settings.topics.runs) if e.data.run_id == handle.run_id]
    assert finished.data.status == "Succeeded" and finished.data.trigger_event_id == "evt-green"
    assert finished.data.idempotency_key == handle.idempotency_key
    assert any(e.data.version == version for e in events(settings, settings.topics.models))


def test_a_redelivered_trigger_is_refused(green, settings):
    engine, handle, data = green
    with pytest.raises(AlreadyRan) as refused:
        engine.submit(RunRequest(model=MODEL, data_uri=data, trigger_event_id="evt-green", trigger="data"))
    assert refused.value.run_id == handle.run_id


def test_a_rerun_on_the_same_data_is_served_from_the_train_cache(green, settings):
    engine, first, data = green
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    runs_before = len(client.search_runs([experiment]))
    handle = engine.submit(RunRequest(model=MODEL, data_uri=data, trigger_event_id="evt-again", trigger="manual"))
    run = engine.run(handle.run_id)
    assert handle.status == "Succeeded", run.error
    train = run.step("train")
    assert train.cached
    assert train.outputs == engine.run(first.run_id).step("train").outputs
    assert len(client.search_runs([experiment])) == runs_before


def test_an_evaluation_that_says_no_registers_the_challenger_but_keeps_the_champion(green, settings, home):
    engine, _, _ = green
    before = champion(settings)
    strict = make_spec(epochs=3).model_copy(update={"policy": PromotionPolicy(metric="accuracy", min_improvement=0.5)})
    save_spec(strict, settings)
    try:
        handle = engine.submit(RunRequest(model=MODEL, data_uri=write_data(home / "data-b", seed=7),
                                          trigger_event_id="evt-reject", trigger="data"))
    finally:
        save_spec(make_spec(epochs=3), settings)
    run = engine.run(handle.run_id)
    assert handle.status == "Succeeded", run.error
    assert run.step("evaluate").outputs["promote"] == "false"
    assert run.step("promote").status == "Skipped" and run.step("register").status == "Succeeded"
    assert champion(settings) == before
    tags = version_tags(settings, run.step("register").outputs["version"])
    assert tags["ctloop.decision"] == "reject"
    assert "below the minimum" in " ".join(json.loads(tags["ctloop.reasons"]))
    assert tags["ctloop.event_id"] == "evt-reject" and tags["ctloop.run_id"] == run.step("train").outputs["run-id"]


def test_data_that_fails_validation_stops_the_run_before_training(green, settings, home):
    engine, _, _ = green
    bad = home / "data-bad"
    bad.mkdir()
    make_frame(300, seed=3).drop(columns=["label"]).to_parquet(bad / "part-0.parquet", index=False)
    handle = engine.submit(RunRequest(model=MODEL, data_uri=str(bad), trigger_event_id="evt-bad", trigger="data"))
    run = engine.run(handle.run_id)
    assert handle.status == "Failed"
    assert run.step("validate").status == "Failed"
    assert "column_present" in run.step("validate").error and "'label'" in run.step("validate").error
    assert [run.step(n).status for n in ("train", "evaluate", "promote", "register")] == ["Omitted"] * 4
    [finished] = [e for e in events(settings, settings.topics.runs) if e.data.run_id == handle.run_id]
    assert finished.data.status == "Failed" and "validate" in finished.data.error

"""Steps in their image: the retrain template's steps run by `LocalEngine(step_mode="container")`, each in the
container image the template names, against the same broker, store and registry as the engine."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.kafka_local import docker_available
from ctloop.modelspec import save_spec
from ctloop.settings import Settings, Topics
from ctloop.workflows.engine import RunRequest
from ctloop.workflows.local.container import ContainerRunner, ContainerStepError, settings_environment
from ctloop.workflows.local.engine import LocalEngine
from ctloop.workflows.local.run_store import RunRecord
from tests.sensors.helpers import arrival, make_sensor
from tests.trainer.conftest import make_spec
from tests.workflows.test_retrain import write_data

REPO = Path(__file__).resolve().parents[2]

MODEL = "churn"
LINEAGE = ("ctloop.event_id", "ctloop.data_digest", "ctloop.code_version", "ctloop.decision")


def test_the_settings_a_container_is_given_are_the_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path / "home", bus="kafka", kafka_bootstrap="127.0.0.1:39092",
                        topics=Topics(data="d-1"), mlflow_tracking_uri="http://127.0.0.1:5000",
                        gpu={"gpus": 1, "node_selector": {"gpu": "a100"}, "tolerations": [{"key": "nvidia.com/gpu"}]})
    environment = settings_environment(settings)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert Settings() == settings
    assert environment["MLFLOW_TRACKING_URI"] == settings.tracking_uri, "MLflow's own clients find the registry"


def test_a_machine_without_the_docker_client_errors_the_step_naming_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    engine = LocalEngine(settings, step_mode="container")
    runner = ContainerRunner(settings, docker=str(tmp_path / "no-docker"),
                             config_maps={"ctloop-specs": settings.home / "specs"})
    with pytest.raises(ContainerStepError, match="no-docker") as failed:
        runner.run(engine.templates["validate"], settings.image, {"model": MODEL}, {"snapshot": str(tmp_path)},
                   tmp_path / "out", None)
    assert failed.value.exit_code < 0, "an engine error, not the step's own failure: never retried"


def _image_missing(image: str) -> str | None:
    if not docker_available():
        return "no Docker engine answers"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode != 0:
        return f"image {image} is not built (docker/build.sh runtime)"
    # An image built from an older lock lacks what this tree imports: the test needs one built from this tree.
    built_from = subprocess.run(["docker", "run", "--rm", "--entrypoint", "cat", image, "/tmp/requirements.lock"],
                                capture_output=True, text=True, check=False).stdout
    if built_from != (REPO / "docker" / "requirements.lock").read_text():
        return f"image {image} was built from another docker/requirements.lock (docker/build.sh runtime)"
    return None


def _finished(engine: LocalEngine, deadline_s: float) -> RunRecord:
    deadline = time.monotonic() + deadline_s
    while True:
        runs = engine.runs.list(model=MODEL)
        if runs and runs[0].status not in ("Running", "Pending"):
            return engine.run(runs[0].id)
        assert time.monotonic() < deadline, f"no finished run within {deadline_s:.0f}s: {runs}"
        time.sleep(1.0)


def _champion_tags(settings: Settings) -> dict[str, str]:
    client = MlflowClient(settings.tracking_uri)
    version = client.get_registered_model(MODEL).aliases["champion"]
    return client.get_model_version(MODEL, str(version)).tags


@pytest.mark.kafka
def test_a_data_arrived_event_runs_every_step_in_its_image_and_registers_the_same_lineage(
        tmp_path: Path, kafka_bootstrap: str, kafka_bus) -> None:
    image = Settings().image
    missing = _image_missing(image)
    if missing:
        pytest.skip(f"steps in containers need the runtime image: {missing}")
    tag = uuid.uuid4().hex[:8]
    event_id = f"evt-{tag}"
    topics = Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}", runs=f"runs-{tag}",
                    models=f"models-{tag}")
    in_containers = Settings(home=tmp_path / "containers", bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics)
    # A container sees this machine's files under the home only (a pod reads its data from S3).
    data = Path(write_data(in_containers.store_root / "churn", seed=0)).as_uri()
    save_spec(make_spec(epochs=3), in_containers)
    engine = LocalEngine(in_containers, step_mode="container")
    sensor = make_sensor(in_containers, kafka_bus, engine)
    try:
        kafka_bus.publish(topics.data, arrival(MODEL, None, event_id, uri=data), key=MODEL)
        kafka_bus.flush()
        deadline = time.monotonic() + 60
        while not engine.runs.list(model=MODEL):
            assert time.monotonic() < deadline, "the sensor started no run"
            sensor.step(0.5)
        run = _finished(engine, 900)
    finally:
        sensor.close()
    assert run.status == "Succeeded", run.error
    assert run.trigger_event_id == event_id
    steps = [(s.name, s.status) for s in run.steps]
    assert steps == [("snapshot", "Succeeded"), ("validate", "Succeeded"), ("train", "Succeeded"),
                     ("evaluate", "Succeeded"), ("promote", "Succeeded"), ("register", "Skipped"),
                     ("onExit.run-finished", "Succeeded")]
    logs = list((in_containers.home / "workflows" / "runs" / run.id / "artifacts").glob("*/*/container/log.txt"))
    assert len(logs) == 6, "every step that ran did so in a container"

    embedded = Settings(home=tmp_path / "embedded")
    save_spec(make_spec(epochs=3), embedded)
    reference = LocalEngine(embedded).submit(RunRequest(model=MODEL, data_uri=data, trigger_event_id=event_id,
                                                        trigger="data"))
    expected = LocalEngine(embedded).run(reference.run_id)
    assert reference.status == "Succeeded", expected.error
    # The run keys differ by design (the sensor keys this digest-less event by its id, a direct submit by URI and
    # event); what the data and code decide, the train step's memo key and the lineage, must be the same.
    assert run.step("snapshot").outputs["train-key"] == expected.step("snapshot").outputs["train-key"]
    got, want = _champion_tags(in_containers), _champion_tags(embedded)
    assert {k: got[k] for k in LINEAGE} == {k: want[k] for k in LINEAGE}
    assert got["ctloop.event_id"] == event_id and got["ctloop.decision"] == "promote"
    assert got["ctloop.run_id"] == run.step("train").outputs["run-id"]

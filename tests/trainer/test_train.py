"""Training is reproducible, and each run leaves its full lineage in MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ctloop.modelspec import CLASSIFICATION_METRICS, REGRESSION_METRICS
from ctloop.profile import load_profile
from ctloop.snapshot import take_snapshot
from ctloop.trainer import loop
from ctloop.trainer.evaluate import frame_digest, holdout_frame
from ctloop.trainer.train import TrainedRun, train
from tests.trainer.conftest import make_spec, write_dataset

SPEC = make_spec()
OWN = {"best_val_loss", "best_epoch", "epochs"}
"""What the built-in trainer reports besides the holdout metrics ctloop scores."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedRun, str, Path]:
    root = tmp_path_factory.mktemp("trained")
    snapshot = take_snapshot(str(write_dataset(root / "data")))
    uri = f"sqlite:///{root}/mlflow.db"
    return train(snapshot, SPEC, tracking_uri=uri, event_id="evt-123", checkpoint_dir=root / "ckpt"), uri, root


def epochs(run: TrainedRun) -> int:
    return int(run.metrics["epochs"])


def test_same_snapshot_and_seed_give_identical_metrics_and_weights(dataset: Path, tracking_uri: str) -> None:
    snapshot = take_snapshot(str(dataset))
    first = train(snapshot, SPEC, tracking_uri=tracking_uri)
    second = train(snapshot, SPEC, tracking_uri=tracking_uri)
    assert first.run_id != second.run_id
    assert first.metrics == second.metrics
    assert first.weight_hash == second.weight_hash
    other_seed = train(snapshot, make_spec(seed=1), tracking_uri=tracking_uri)
    assert other_seed.weight_hash != first.weight_hash


def test_the_model_learns_the_signal(trained) -> None:
    result, _, _ = trained
    assert result.metrics["accuracy"] > 0.85
    assert set(result.metrics) == {*CLASSIFICATION_METRICS, *OWN}


def test_the_run_records_params_metrics_tags_dataset_and_profile(trained) -> None:
    result, uri, root = trained
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == SPEC.name
    assert run.info.status == "FINISHED"
    for key, value in SPEC.train.model_dump().items():
        expected = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert run.data.params[key] == expected
    assert {"task", "label", "features", "rows_train", "rows_val", "rows_holdout", "device"} <= set(run.data.params)
    tags = run.data.tags
    assert tags["ctloop.data_digest"] == result.data_digest
    assert tags["ctloop.snapshot_uri"].endswith("/data")
    assert tags["ctloop.code_version"].startswith(("git:", "pkg:"))
    assert tags["ctloop.trainer"] == "builtin" and tags["ctloop.trainer_code_version"] == tags["ctloop.code_version"]
    assert tags["ctloop.event_id"] == "evt-123"
    assert tags["ctloop.seed"] == "0"
    assert tags["ctloop.model"] == SPEC.name
    assert tags["ctloop.weight_hash"] == result.weight_hash
    holdout = holdout_frame(take_snapshot(str(root / "data")), SPEC)
    assert tags["ctloop.holdout_digest"] == frame_digest(holdout)
    for name in ("train_loss", "val_loss"):
        assert [m.step for m in client.get_metric_history(result.run_id, name)] == list(range(epochs(result)))
    for name in CLASSIFICATION_METRICS:
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "local"
    assert result.data_digest.startswith(dataset_input.dataset.digest)
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    profile = load_profile(Path(client.download_artifacts(result.run_id, "reference_profile.json")).read_text())
    assert set(profile.numeric) == {"x1", "x2"} and set(profile.categorical) == {"color"}
    assert profile.rows == int(run.data.params["rows_train"])


def test_metrics_go_to_mlflow_in_batches(dataset: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list]] = []
    for method in ("log_batch", "log_metric", "log_param"):
        original = getattr(MlflowClient, method)

        def spy(self, *args, _original=original, _name=method, **kwargs):
            calls.append((_name, list(kwargs.get("metrics", ()))))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, spy)
    result = train(take_snapshot(str(dataset)), SPEC, tracking_uri=tracking_uri)
    assert epochs(result) >= 3
    every_epoch = list(range(epochs(result)))
    history_batches = [
        metrics for name, metrics in calls
        if name == "log_batch" and sorted(m.step for m in metrics if m.key == "train_loss") == every_epoch
    ]
    assert len(history_batches) == 1
    assert {m.key for m in history_batches[0]} == {"train_loss", "val_loss", *CLASSIFICATION_METRICS, *OWN}
    assert not [name for name, _ in calls if name in ("log_metric", "log_param")]


def test_the_logged_model_loads_from_the_registry_and_predicts(trained) -> None:
    result, uri, _ = trained
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(result.model_uri, "churn-registry-test")
    assert str(version.version) == "1"
    model = mlflow.pyfunc.load_model("models:/churn-registry-test/1")
    raw = pd.DataFrame({"x1": [2.0, -2.0, 0.1], "x2": [5.0, 1.0, None], "color": ["red", "blue", "purple"]})
    labels = model.predict(raw)
    assert list(labels) == [1, 0, labels[2]] and labels[2] in (0, 1)
    proba = model.predict(raw, params={"output": "proba"})
    assert list(proba.columns) == ["0", "1"]
    assert proba.sum(axis=1).round(6).tolist() == [1.0, 1.0, 1.0]


def test_a_checkpoint_is_written_every_epoch_and_resumed(trained, tmp_path: Path) -> None:
    result, _, root = trained
    assert (root / "ckpt" / "last.pt").is_file()
    snapshot = take_snapshot(str(root / "data"))
    resumed = train(snapshot, SPEC, tracking_uri=f"sqlite:///{tmp_path}/m.db", checkpoint_dir=root / "ckpt")
    assert resumed.weight_hash == result.weight_hash and epochs(resumed) == epochs(result)


def test_training_interrupted_midway_resumes_to_the_same_weights(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, root = trained
    snapshot = take_snapshot(str(root / "data"))
    uri = f"sqlite:///{tmp_path}/m.db"
    saves = []
    real_save = loop._save_checkpoint

    def crash_after_three_epochs(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt("node preempted")

    monkeypatch.setattr(loop, "_save_checkpoint", crash_after_three_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(snapshot, SPEC, tracking_uri=uri, checkpoint_dir=tmp_path / "ckpt")
    monkeypatch.setattr(loop, "_save_checkpoint", real_save)
    resumed = train(snapshot, SPEC, tracking_uri=uri, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.weight_hash == result.weight_hash and epochs(resumed) == epochs(result)
    failed = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name(SPEC.name).experiment_id],
                                           "attributes.status = 'FAILED'")
    assert len(failed) == 1


def test_a_checkpoint_of_another_spec_is_not_resumed(trained, tmp_path: Path) -> None:
    result, _, root = trained
    snapshot = take_snapshot(str(root / "data"))
    uri = f"sqlite:///{tmp_path}/m.db"
    train(snapshot, make_spec(epochs=3), tracking_uri=uri, checkpoint_dir=tmp_path / "ckpt")
    assert train(snapshot, SPEC, tracking_uri=uri, checkpoint_dir=tmp_path / "ckpt").weight_hash == result.weight_hash


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_other_tasks_train_and_report_their_metrics(task: str, tmp_path: Path) -> None:
    snapshot = take_snapshot(str(write_dataset(tmp_path / "data", task=task)))
    result = train(snapshot, make_spec(task, name=f"m-{task}"), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    if task == "regression":
        assert set(result.metrics) == {*REGRESSION_METRICS, *OWN} and result.metrics["r2"] > 0.8
    else:
        assert set(result.metrics) == {*CLASSIFICATION_METRICS, *OWN} and result.metrics["accuracy"] > 0.7


def test_torchrun_with_world_size_one_is_the_single_process_path(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, root = trained
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    single = train(take_snapshot(str(root / "data")), SPEC, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert not __import__("torch").distributed.is_initialized()
    assert single.weight_hash == result.weight_hash
    assert os.environ["WORLD_SIZE"] == "1"


def test_a_split_that_leaves_no_training_rows_is_refused(tmp_path: Path) -> None:
    snapshot = take_snapshot(str(write_dataset(tmp_path / "data")))
    with pytest.raises(ValueError, match="no rows left for training"):
        train(snapshot, make_spec(holdout_share=0.5, val_share=0.5), tracking_uri=f"sqlite:///{tmp_path}/m.db")

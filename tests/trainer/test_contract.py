"""The training contract from the user's side: what a trainer gets, and a clear error (with nothing left to
register) for each way a trainer can be wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.modelspec import ModelSpec
from ctloop.references import BadReference, code_version
from ctloop.snapshot import load_frame, take_snapshot
from ctloop.trainer.split import split_frame
from ctloop.trainer.train import ERROR_ARTIFACT, TrainerFailed, train
from tests.trainer.conftest import make_spec, write_dataset

GOOD = '''
import json
import mlflow.pyfunc
import pandas as pd
import torch
from ctloop import TrainContext, TrainResult

class Majority(mlflow.pyfunc.PythonModel):
    def __init__(self, label):
        self.label = label

    def predict(self, context, model_input, params=None):
        return [self.label] * len(model_input)

def train(ctx: TrainContext) -> TrainResult:
    seen = {"ids": sorted(map(int, ctx.train["id"])) + sorted(map(int, ctx.validation["id"])),
            "params": dict(ctx.params), "seed": ctx.seed, "torch_seed": torch.initial_seed(),
            "device": str(ctx.device), "output_dir": ctx.output_dir.is_dir()}
    if "seen" in ctx.params:
        open(ctx.params["seen"], "w").write(json.dumps(seen))
    ctx.log_metric("custom", 0.5, step=1)
    label = int(ctx.train["label"].mode()[0])
    return TrainResult(model=Majority(label), input_example=ctx.train[["x1", "x2", "color"]].head(3))
'''


def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A one-module user package on sys.path; returns its name."""
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    package = tmp_path / "src" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "trainer.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    return name


def spec_with(trainer: str, **update: object) -> ModelSpec:
    return make_spec().model_copy(update={"trainer": trainer, **update})


def runs(uri: str, status: str | None = None) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("churn")
    if experiment is None:
        return []
    query = f"attributes.status = '{status}'" if status else ""
    return client.search_runs([experiment.experiment_id], query)


@pytest.fixture
def snapshot(tmp_path: Path):
    return take_snapshot(str(write_dataset(tmp_path / "data")))


def test_a_users_trainer_gets_params_seed_device_and_never_the_holdout(tmp_path, monkeypatch, snapshot) -> None:
    name = user_package(tmp_path, monkeypatch, GOOD)
    uri = f"sqlite:///{tmp_path}/m.db"
    params = {"depth": 3, "note": "free-form", "seen": str(tmp_path / "seen.json")}
    spec = spec_with(f"{name}.trainer:train", params=params)
    result = train(snapshot, spec, tracking_uri=uri)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["params"] == params
    assert seen["seed"] == 0 and seen["torch_seed"] == 0 and seen["device"] == "cpu" and seen["output_dir"]
    holdout = set(split_frame(load_frame(snapshot), spec).holdout["id"])
    assert holdout and not holdout & set(seen["ids"])
    assert {"accuracy", "balanced_accuracy", "f1", "precision", "recall"} <= set(result.metrics)
    assert "roc_auc" not in result.metrics  # labels only: this model gives no probabilities
    (run,) = runs(uri)
    assert run.info.status == "FINISHED" and run.data.metrics["custom"] == 0.5
    assert run.data.tags["ctloop.trainer"] == f"{name}.trainer:train"
    assert run.data.tags["ctloop.trainer_code_version"] == result.trainer_version == code_version(spec.trainer)
    assert run.data.params["depth"] == "3"


def test_changed_trainer_code_gives_a_new_code_version(tmp_path, monkeypatch) -> None:
    name = user_package(tmp_path, monkeypatch, GOOD)
    before = code_version(f"{name}.trainer:train")
    assert code_version(f"{name}.trainer:train") == before
    path = tmp_path / "src" / name / "trainer.py"
    path.write_text(path.read_text() + "\n# tuned\n")
    assert code_version(f"{name}.trainer:train") != before


def test_a_trainer_that_does_not_import_is_refused_before_any_run(tmp_path, snapshot) -> None:
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(BadReference, match=r"module 'no_such_team.churn' does not import.*pip install"):
        train(snapshot, spec_with("no_such_team.churn:train"), tracking_uri=uri)
    assert runs(uri) == []


def test_a_missing_function_is_named(tmp_path, monkeypatch, snapshot) -> None:
    name = user_package(tmp_path, monkeypatch, GOOD)
    with pytest.raises(BadReference, match=f"module '{name}.trainer' has no attribute 'fit'"):
        train(snapshot, spec_with(f"{name}.trainer:fit"), tracking_uri=f"sqlite:///{tmp_path}/m.db")


def test_a_trainer_with_the_wrong_signature_is_refused(tmp_path, monkeypatch, snapshot) -> None:
    name = user_package(tmp_path, monkeypatch, "def train(data, params):\n    return None\n")
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(BadReference, match=r"must take one argument, a ctloop.TrainContext; .*train\(data, params\)"):
        train(snapshot, spec_with(f"{name}.trainer:train"), tracking_uri=uri)
    assert runs(uri) == []


@pytest.mark.parametrize(("body", "message"), [
    ("return {'model': 1}", "returned dict, not a ctloop.TrainResult"),
    ("return TrainResult(model='weights.pt', input_example=ctx.train.head(2))",
     "returned a model of type builtins.str; expected an mlflow.pyfunc.PythonModel"),
    ("return TrainResult(model=torch.nn.Linear(2, 1), input_example=ctx.train.head(2))",
     "torch.nn.Module without TrainResult.predict"),
])
def test_a_result_that_is_not_a_model_fails_the_run(tmp_path, monkeypatch, snapshot, body, message) -> None:
    source = f"import torch\nfrom ctloop import TrainResult\n\ndef train(ctx):\n    {body}\n"
    name = user_package(tmp_path, monkeypatch, source)
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(TrainerFailed, match=message):
        train(snapshot, spec_with(f"{name}.trainer:train"), tracking_uri=uri)
    assert len(runs(uri, "FAILED")) == 1 and runs(uri, "FINISHED") == []
    assert MlflowClient(uri).search_registered_models() == []


def test_a_predict_that_fails_on_the_input_example_fails_the_run(tmp_path, monkeypatch, snapshot) -> None:
    source = GOOD.replace("return [self.label] * len(model_input)", "raise KeyError('no column tenure')")
    name = user_package(tmp_path, monkeypatch, source)
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(TrainerFailed, match=r"fails on its own input example after logging: .*no column tenure"):
        train(snapshot, spec_with(f"{name}.trainer:train"), tracking_uri=uri)
    assert len(runs(uri, "FAILED")) == 1
    assert MlflowClient(uri).search_registered_models() == []


def test_a_trainer_that_raises_leaves_its_traceback_on_the_failed_run(tmp_path, monkeypatch, snapshot) -> None:
    source = "def train(ctx):\n    helper()\n\ndef helper():\n    raise RuntimeError('CUDA out of memory')\n"
    name = user_package(tmp_path, monkeypatch, source)
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(TrainerFailed, match=r"raised RuntimeError: CUDA out of memory .*trainer_error.txt"):
        train(snapshot, spec_with(f"{name}.trainer:train"), tracking_uri=uri)
    (run,) = runs(uri, "FAILED")
    text = Path(MlflowClient(uri).download_artifacts(run.info.run_id, ERROR_ARTIFACT)).read_text()
    assert "in helper" in text and "RuntimeError: CUDA out of memory" in text
    assert run.data.tags["ctloop.failure"].startswith("trainer raised RuntimeError")


def test_import_ctloop_loads_neither_torch_nor_mlflow() -> None:
    code = ("import sys, ctloop; ctloop.TrainContext; ctloop.TrainResult; "
            "print(sorted(m for m in ('torch', 'mlflow', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"

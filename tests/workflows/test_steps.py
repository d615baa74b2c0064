"""Step functions as a pod runs them: what the snapshot step passes on to train, and the decision passed on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctloop.modelspec import ModelSpec, TrainResources, save_spec
from ctloop.settings import Settings
from ctloop.workflows import steps
from ctloop.workflows.step_context import use_settings
from tests.trainer.conftest import make_spec, write_dataset

IMAGE = "registry.example/team/churn@sha256:" + "c" * 64


def snapshot_outputs(tmp_path: Path, spec: ModelSpec, params: str = "{}") -> steps.SnapshotOutput:
    settings = Settings(home=tmp_path / "home", image="registry.example/ctloop:default")
    save_spec(spec, settings)
    with use_settings(settings):
        return steps.snapshot(spec.name, str(write_dataset(tmp_path / "data")), "git:abc", params)


def test_the_snapshot_step_names_the_specs_image_and_resources_for_train(tmp_path: Path) -> None:
    spec = make_spec().model_copy(update={"trainer": "team.churn:train", "image": IMAGE,
                                          "resources": TrainResources(gpus=1)})
    out = snapshot_outputs(tmp_path, spec)
    assert out.train_image == IMAGE
    patch = json.loads(out.train_pod_patch)
    assert patch["containers"][0]["name"] == "main"
    assert patch["containers"][0]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": 1}


def test_without_an_image_train_runs_the_default_one_unpatched(tmp_path: Path) -> None:
    out = snapshot_outputs(tmp_path, make_spec())
    assert out.train_image == "registry.example/ctloop:default" and out.train_pod_patch == "{}"


def test_the_train_key_changes_with_the_trainers_image(tmp_path: Path) -> None:
    base = make_spec().model_copy(update={"trainer": "team.churn:train"})
    one = snapshot_outputs(tmp_path / "a", base.model_copy(update={"image": IMAGE}))
    other = snapshot_outputs(tmp_path / "b", base.model_copy(update={"image": IMAGE.replace("c" * 64, "d" * 64)}))
    assert one.digest == other.digest and one.train_key != other.train_key


def test_run_overrides_go_to_a_user_trainers_free_form_params(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    save_spec(make_spec().model_copy(update={"trainer": "team.churn:train", "params": {"depth": 2}}), settings)
    with use_settings(settings):
        spec = steps._spec("churn", json.dumps({"depth": "4", "dropout": "0.1"}))
    assert spec.params == {"depth": 4, "dropout": 0.1}


def test_the_decision_is_passed_on_not_made_again() -> None:
    decision = steps._decision(False, json.dumps(["accuracy 0.8 vs champion 0.9 (max): no improvement"]))
    assert not decision.promote and decision.reasons == ("accuracy 0.8 vs champion 0.9 (max): no improvement",)
    with pytest.raises(ValueError, match="JSON list"):
        steps._decision(True, '{"not": "a list"}')


def test_a_versions_code_lineage_names_a_users_trainer_and_not_the_built_in_twice() -> None:
    user = steps._provenance("evt", "digest", "git:abc", "run", "sha256:f00")
    assert user["code_version"] == "git:abc+trainer:sha256:f00"
    assert steps._provenance("evt", "digest", "git:abc", "run", "git:abc")["code_version"] == "git:abc"

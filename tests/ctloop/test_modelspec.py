"""Model specs: the trainer fields are checked when a spec is loaded, and old specs keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ctloop.modelspec import CLASSIFICATION_METRICS, ModelSpec

ROOT = Path(__file__).resolve().parents[2]
TABLE = {"features": [{"name": "x"}], "label": "y"}
DIGEST = "sha256:" + "ab" * 32


def spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "data": TABLE, **fields})


def test_the_shipped_specs_load_and_their_policies_name_produced_metrics() -> None:
    for path in [ROOT / "k8s/base/specs/churn.json", *ROOT.glob("examples/*/spec.json")]:
        loaded = ModelSpec.model_validate_json(path.read_text())
        assert loaded.policy.metric in loaded.known_metrics, path


def test_a_spec_without_trainer_fields_is_the_built_in_mlp_as_before() -> None:
    old = spec(train={"hidden": [8], "epochs": 3})
    assert old.trainer is None and old.params == {} and old.image is None and old.policy.metric == "accuracy"


def test_a_policy_naming_a_metric_never_produced_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        spec(policy={"metric": "auc"})
    assert "['auc']" in str(caught.value) and str(list(CLASSIFICATION_METRICS)) in str(caught.value)
    with pytest.raises(ValidationError, match=r"\['rmse'\]"):
        spec(policy={"metric": "accuracy", "guardrails": [{"metric": "rmse"}]})


def test_user_metrics_are_known_to_the_policy() -> None:
    assert spec(metrics={"top3": "team.metrics:top3"}, policy={"metric": "top3"}).known_metrics[-1] == "top3"
    with pytest.raises(ValidationError, match="shadow built-in metrics"):
        spec(metrics={"accuracy": "team.metrics:acc"})


def test_a_regression_spec_without_a_policy_is_judged_by_rmse() -> None:
    regression = ModelSpec.model_validate({"name": "m", "data": {**TABLE, "task": "regression"}})
    assert (regression.policy.metric, regression.policy.direction) == ("rmse", "min")


@pytest.mark.parametrize("reference", ["team.churn", "team/churn.py:train", "team.churn:train()", ":train"])
def test_a_trainer_reference_must_be_module_colon_function(reference: str) -> None:
    with pytest.raises(ValidationError, match=r"is not a 'package\.module:function' reference"):
        spec(trainer=reference)


def test_an_image_must_be_pinned_by_digest() -> None:
    assert spec(image=f"registry.example/team/churn@{DIGEST}").image.endswith(DIGEST)
    with pytest.raises(ValidationError, match=r"not pinned by digest.*REPO@sha256"):
        spec(image="registry.example/team/churn:latest")


def test_resources_are_quantities() -> None:
    assert spec(resources={"gpus": 1, "memory": "24Gi"}).resources.gpus == 1
    with pytest.raises(ValidationError):
        spec(resources={"memory": "lots"})


def test_a_files_dataset_needs_an_inputs_function_and_labels_from_directories() -> None:
    files = {"kind": "files", "task": "multiclass", "inputs": "team.images:load"}
    assert ModelSpec.model_validate({"name": "m", "data": files}).data.kind == "files"
    with pytest.raises(ValidationError, match="needs 'inputs'"):
        ModelSpec.model_validate({"name": "m", "data": {"kind": "files"}})
    with pytest.raises(ValidationError, match="binary or multiclass only"):
        ModelSpec.model_validate({"name": "m", "data": {**files, "task": "regression"}})
    with pytest.raises(ValidationError, match="needs 'features'"):
        ModelSpec.model_validate({"name": "m", "data": {"label": "y"}})


def test_a_spec_round_trips_through_json() -> None:
    full = spec(trainer="team.churn:train", params={"depth": 4, "layers": [8, 8]}, image=f"r/x@{DIGEST}",
                resources={"gpus": 2}, monitor={"featurize": "team.churn:featurize"})
    assert ModelSpec.model_validate(json.loads(full.model_dump_json())) == full


def test_a_bake_window_compares_the_policys_metric_unless_it_names_its_own() -> None:
    baked = spec(policy={"metric": "f1", "bake": {"window": "30m", "min_rows": 100, "tolerance": 0.02}})
    assert (baked.policy.bake_metric, baked.policy.bake.window_s, baked.policy.bake.min_rows) == ("f1", 1800.0, 100)
    assert spec(policy={"bake": {"metric": "recall"}}).policy.bake_metric == "recall"
    assert spec().policy.bake is None and spec().policy.bake_metric is None


def test_a_bake_window_is_refused_when_live_quality_cannot_compute_it() -> None:
    with pytest.raises(ValidationError, match=r"policy\.bake compares metric 'top3'"):
        spec(metrics={"top3": "team.metrics:top3"}, policy={"metric": "top3", "bake": {}})
    with pytest.raises(ValidationError, match=r"policy\.bake compares metric 'rmse'"):
        spec(policy={"bake": {"metric": "rmse"}})
    with pytest.raises(ValidationError, match="not a duration"):
        spec(policy={"bake": {"window": "soon"}})
    with pytest.raises(ValidationError, match="tolerance"):
        spec(policy={"bake": {"tolerance": -0.1}})

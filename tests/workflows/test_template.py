"""The retrain WorkflowTemplate: valid Argo v4, the cluster details settings ask for, and kept fresh on disk."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ctloop.settings import GpuSettings, Settings, Toleration
from ctloop.workflows.render import render_manifests
from ctloop.workflows.template import PARAMETERS, TRAIN_CACHE, retrain_template
from tests.workflows.argo_schema import CRD, schema_errors

GENERATED = Path(__file__).resolve().parents[2] / "k8s" / "base" / "generated"
needs_schema = pytest.mark.skipif(not CRD.is_file(), reason=f"Argo CRD schema not present at {CRD}")


@pytest.fixture
def default_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the checked-in manifests are rendered: nothing from this machine's environment."""
    for name in list(__import__("os").environ):
        if name.startswith("CTLOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return Settings(home=Path("/nonexistent"))


def gpu_settings() -> Settings:
    return Settings(home=Path("/nonexistent"), s3_endpoint_url="https://minio.example:9000", gpu=GpuSettings(
        gpus=2, node_selector={"nvidia.com/gpu.product": "H100"}, tolerations=(Toleration(key="nvidia.com/gpu"),)))


def document(settings: Settings) -> dict:
    return yaml.safe_load(render_manifests(settings)["workflow-template.yaml"])


def templates(doc: dict) -> dict[str, dict]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def test_the_checked_in_template_is_a_fresh_render(default_settings):
    for name, text in render_manifests(default_settings).items():
        path = GENERATED / name
        assert path.is_file(), f"{path} missing: run `ctloop render`"
        assert path.read_text() == text, f"{path} is stale: run `ctloop render` and commit it"


@needs_schema
@pytest.mark.parametrize("make", [lambda: Settings(home=Path("/nonexistent")), gpu_settings], ids=["cpu", "gpu"])
def test_the_rendered_template_validates_against_the_argo_v4_crd(make):
    assert schema_errors(document(make())) == []


@needs_schema
def test_the_strict_schema_catches_a_misspelt_field():
    doc = copy.deepcopy(document(Settings(home=Path("/nonexistent"))))
    doc["spec"]["templates"][1]["retryStrategy"]["limmit"] = 3
    assert any("limmit" in e for e in schema_errors(doc))


def test_workflow_parameters_carry_the_trigger():
    params = {p["name"]: p for p in document(Settings(home=Path("/nonexistent")))["spec"]["arguments"]["parameters"]}
    assert tuple(params) == PARAMETERS
    assert "value" not in params["model"] and "value" not in params["idempotency-key"]
    assert params["data-digest"]["value"] == "" and params["event-id"]["value"] == ""


def test_dag_order_when_and_exit_handler():
    doc = document(Settings(home=Path("/nonexistent")))
    tasks = {t["name"]: t for t in templates(doc)["retrain"]["dag"]["tasks"]}
    assert {n: t.get("depends") for n, t in tasks.items()} == {
        "snapshot": None, "validate": "snapshot", "train": "validate", "evaluate": "train",
        "promote": "evaluate", "register": "evaluate"}
    assert tasks["promote"]["when"] == "{{tasks.evaluate.outputs.parameters.promote}} == true"
    assert tasks["register"]["when"] == "{{tasks.evaluate.outputs.parameters.promote}} == false"
    assert doc["spec"]["onExit"] == "finished"
    [publish] = templates(doc)["finished"]["dag"]["tasks"]
    args = {p["name"]: p["value"] for p in publish["arguments"]["parameters"]}
    assert args["status"] == "{{workflow.status}}" and args["run-id"] == "{{workflow.name}}"


def test_steps_run_real_functions_through_the_hera_runner():
    for name, template in templates(document(Settings(home=Path("/nonexistent")))).items():
        if "script" in template:
            args = template["script"]["args"]
            assert args[:3] == ["-m", "hera.workflows.runner", "-e"], name
            assert args[3].startswith("ctloop.workflows.steps:"), name


def test_train_is_memoized_retried_and_scheduled_on_gpus():
    train = templates(document(gpu_settings()))["train"]
    assert train["memoize"] == {"key": "train-{{inputs.parameters.train-key}}", "maxAge": "720h",
                                "cache": {"configMap": {"name": TRAIN_CACHE}}}
    retry = train["retryStrategy"]
    assert retry["expression"] == "asInt(lastRetry.exitCode) == 75" and retry["limit"] == 3
    assert retry["backoff"]["factor"] == 2
    resources = train["script"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2" and resources["requests"]["nvidia.com/gpu"] == "2"
    assert train["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert train["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_cpu_cluster_gets_no_gpu_request():
    train = templates(document(Settings(home=Path("/nonexistent"))))["train"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(train)
    assert "nodeSelector" not in train and "tolerations" not in train


def test_promote_holds_a_mutex_per_model():
    promote = templates(document(Settings(home=Path("/nonexistent"))))["promote"]
    assert promote["synchronization"] == {"mutexes": [{"name": "ctloop-promote-{{inputs.parameters.model}}"}]}


def test_artifacts_go_to_s3_with_secret_references_only():
    doc = document(gpu_settings())
    for name in ("snapshot", "evaluate"):
        [artifact] = templates(doc)[name]["outputs"]["artifacts"]
        s3 = artifact["s3"]
        assert s3["endpoint"] == "minio.example:9000" and s3["insecure"] is False
        assert s3["accessKeySecret"] == {"name": "ctloop-s3", "key": "access-key-id"}
        assert s3["secretKeySecret"] == {"name": "ctloop-s3", "key": "secret-access-key"}
        assert "{{workflow.name}}" in s3["key"]
    text = yaml.safe_dump(doc)
    for literal in ("accessKey:", "secretKey:", "AWS_SECRET_ACCESS_KEY: ", "password"):
        assert literal not in text


def test_the_local_engine_walks_exactly_the_rendered_template(tmp_path):
    from ctloop.workflows.local.engine import LocalEngine

    settings = Settings(home=tmp_path)
    engine = LocalEngine(settings)
    assert engine.spec == retrain_template(settings).build().spec


def test_train_runs_the_image_and_resources_the_snapshot_step_read_from_the_spec():
    doc = document(Settings(home=Path("/nonexistent"), image="registry.example/ctloop@sha256:" + "0" * 64))
    train = templates(doc)["train"]
    assert train["script"]["image"] == "{{inputs.parameters.image}}"
    assert train["podSpecPatch"] == "{{inputs.parameters.pod-patch}}"
    tasks = {t["name"]: t for t in templates(doc)["retrain"]["dag"]["tasks"]}
    args = {p["name"]: p["value"] for p in tasks["train"]["arguments"]["parameters"]}
    assert args["image"] == "{{tasks.snapshot.outputs.parameters.train-image}}"
    assert args["pod-patch"] == "{{tasks.snapshot.outputs.parameters.train-pod-patch}}"
    env = {e["name"]: e.get("value") for e in templates(doc)["snapshot"]["script"]["env"]}
    assert env["CTLOOP_IMAGE"] == "registry.example/ctloop@sha256:" + "0" * 64  # the default train image


def test_promote_and_register_act_on_the_evaluate_steps_decision():
    tasks = {t["name"]: t for t in templates(document(Settings(home=Path("/nonexistent"))))["retrain"]["dag"]["tasks"]}
    for name in ("promote", "register"):
        args = {p["name"]: p["value"] for p in tasks[name]["arguments"]["parameters"]}
        assert args["reasons"] == "{{tasks.evaluate.outputs.parameters.reasons}}"
        assert args["trainer-version"] == "{{tasks.train.outputs.parameters.trainer-version}}"

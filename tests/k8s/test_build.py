"""Every overlay builds, and every object in it is valid for the API it will be sent to."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from kubernetes.client import ApiClient

from ctloop.modelspec import ModelSpec
from tests.k8s.manifests import (
    ARGO_EVENTS_KINDS,
    K8S,
    SCHEMAS,
    Manifest,
    argo_events_schema,
    dropped_fields,
    model_name,
    named,
    of_kind,
    pod_spec,
    workflow_template_schema,
)

needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(), reason=f"Argo schemas not found at {SCHEMAS}: Argo kinds cannot be validated offline"
)


def test_base_lists_every_generated_manifest() -> None:
    """`ctloop render` output reaches the cluster only if the base names it."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    generated = {f"generated/{p.name}" for p in (K8S / "base" / "generated").glob("*.yaml")}
    assert generated, "k8s/base/generated/ is empty: run `ctloop render`"
    assert generated <= set(kustomization["resources"])


def test_everything_lands_in_the_ctloop_namespace(overlay: list[Manifest]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for m in overlay:
        if m["kind"] not in cluster_scoped:
            assert m["metadata"].get("namespace") == "ctloop", f"{m['kind']}/{m['metadata']['name']}"
    assert not of_kind(overlay, "ClusterRole") and not of_kind(overlay, "ClusterRoleBinding")


def test_no_secret_objects_are_shipped(overlay: list[Manifest]) -> None:
    """Credentials are created by the operator beforehand (k8s/secrets.example.yaml), never built."""
    assert not of_kind(overlay, "Secret")
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secretGenerator" not in kustomization


@needs_schemas
def test_workflow_templates_match_the_argo_v4_crd(overlay: list[Manifest]) -> None:
    templates = of_kind(overlay, "WorkflowTemplate")
    assert templates, "no WorkflowTemplate in the build"
    validator = jsonschema.Draft7Validator(workflow_template_schema())
    for template in templates:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(template)]
        assert not errors, f"WorkflowTemplate/{template['metadata']['name']}:\n" + "\n".join(errors[:20])


@needs_schemas
@pytest.mark.parametrize("kind", ARGO_EVENTS_KINDS)
def test_argo_events_objects_match_the_1_9_schema(overlay: list[Manifest], kind: str) -> None:
    objects = of_kind(overlay, kind)
    assert objects, f"no {kind} in the build"
    validator = jsonschema.Draft202012Validator(argo_events_schema(kind))
    for obj in objects:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{kind}/{obj['metadata']['name']}:\n" + "\n".join(errors[:20])


@needs_schemas
def test_the_argo_schemas_reject_misspelt_fields() -> None:
    """The fixed-up schemas are strict enough to catch a typo in a patch or a rendering."""
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "t"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "scirpt": {"image": "i", "source": "x"}}]},
    }
    errors = [e.message for e in jsonschema.Draft7Validator(workflow_template_schema()).iter_errors(template)]
    assert any("scirpt" in e for e in errors)
    sensor = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {"name": "s"},
        "spec": {"template": {"serviceAcountName": "x"}, "dependencies": [], "triggers": []},
    }
    errors = [e.message for e in jsonschema.Draft202012Validator(argo_events_schema("Sensor")).iter_errors(sensor)]
    assert any("serviceAcountName" in e for e in errors)
    retry = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "t"},
        "spec": {"templates": [{"name": "m", "retryStrategy": {"backoff": {"factor": 2}}}]},
    }
    assert not list(jsonschema.Draft7Validator(workflow_template_schema()).iter_errors(retry)), "int-or-string"


def test_core_objects_load_into_the_kubernetes_models_without_losing_fields(overlay: list[Manifest]) -> None:
    """A misspelt or misplaced field is dropped by the typed model: the round trip shows it."""
    client = ApiClient()
    core = [m for m in overlay if "argoproj.io" not in m["apiVersion"]]
    assert core
    for manifest in core:
        # The client's deserializer is private, but it is the one the API responses go through.
        model = client._ApiClient__deserialize(manifest, model_name(manifest))
        lost = dropped_fields(manifest, client.sanitize_for_serialization(model))
        assert not lost, f"{manifest['kind']}/{manifest['metadata']['name']} has unknown fields: {lost}"


def test_dropped_fields_catches_a_misspelt_field() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selektor": {"a": "b"}, "ports": [{"port": 80}]},
    }
    client = ApiClient()
    model = client._ApiClient__deserialize(manifest, model_name(manifest))
    assert dropped_fields(manifest, client.sanitize_for_serialization(model)) == [".spec.selektor"]


def test_memoize_cache_carries_argos_label(overlay: list[Manifest]) -> None:
    cache = named(overlay, "ConfigMap", "ctloop-train-cache")
    assert cache["metadata"]["labels"]["workflows.argoproj.io/configmap-type"] == "Cache"


def test_model_specs_are_valid_and_every_model_served_or_watched_has_one(overlay: list[Manifest]) -> None:
    specs = named(overlay, "ConfigMap", "ctloop-specs")["data"]
    for key, text in specs.items():
        spec = ModelSpec.model_validate(json.loads(text))
        assert key == f"{spec.name}.json", "specs are looked up as <home>/specs/<name>.json"
    for name in ("ctloop-serving", "ctloop-monitor"):
        args = pod_spec(named(overlay, "Deployment", name))["containers"][0]["args"]
        assert f"{args[args.index('--model') + 1]}.json" in specs, name


def test_specs_are_mounted_at_the_ctloop_home(overlay: list[Manifest]) -> None:
    config = named(overlay, "ConfigMap", "ctloop-config")["data"]
    for name in ("ctloop-serving", "ctloop-monitor", "ctloop-outcomes"):
        spec = pod_spec(named(overlay, "Deployment", name))
        volume = next(v["name"] for v in spec["volumes"] if v.get("configMap", {}).get("name") == "ctloop-specs")
        for container in spec["containers"]:
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts[volume] == f"{config['CTLOOP_HOME']}/specs", f"{name}/{container['name']}"


def test_mlflow_keeps_its_store_in_postgres_and_artifacts_in_s3(overlay: list[Manifest]) -> None:
    container = pod_spec(named(overlay, "Deployment", "ctloop-mlflow"))["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "ctloop-mlflow-db"
    assert any(a.startswith("--artifacts-destination=s3://") for a in container["args"])


def test_minio_announces_new_objects_on_kafka(overlay: list[Manifest]) -> None:
    container = pod_spec(named(overlay, "StatefulSet", "ctloop-minio"))["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MINIO_NOTIFY_KAFKA_ENABLE_CTLOOP"]["value"] == "on"
    brokers = env["MINIO_NOTIFY_KAFKA_BROKERS_CTLOOP"]["valueFrom"]["configMapKeyRef"]
    assert brokers == {"name": "ctloop-kafka", "key": "CTLOOP_KAFKA_BOOTSTRAP"}
    assert "MINIO_NOTIFY_KAFKA_TOPIC_CTLOOP" in env


def test_dev_is_small_single_replica_and_cpu_only(built: dict[str, list[Manifest]]) -> None:
    dev = built["dev"]
    for workload in [*of_kind(dev, "Deployment"), *of_kind(dev, "StatefulSet")]:
        assert workload["spec"]["replicas"] == 1, workload["metadata"]["name"]
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(dev)


def test_base_autoscales_serving(built: dict[str, list[Manifest]]) -> None:
    hpa = named(built["gpu"], "HorizontalPodAutoscaler", "ctloop-serving")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ctloop-serving"}
    assert hpa["spec"]["minReplicas"] >= 2


def test_gpu_overlay_puts_the_train_step_on_gpu_nodes(built: dict[str, list[Manifest]]) -> None:
    spec = named(built["gpu"], "WorkflowTemplate", "ctloop-retrain")["spec"]
    by_name = {t["name"]: t for t in spec["templates"]}
    train = by_name["train"]
    body = train.get("script") or train.get("container")
    assert int(body["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert train["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in train["tolerations"])
    others = [t for name, t in by_name.items() if name != "train"]
    assert all("nvidia.com/gpu" not in yaml.safe_dump(t) for t in others), "only the train step takes a GPU"

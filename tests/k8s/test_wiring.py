"""The pieces point at each other: every name one object uses is an object in the build (or a
Secret the operator creates from k8s/secrets.example.yaml), and every address is a real Service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from tests.k8s.manifests import K8S, Manifest, named, of_kind

SECRET_REF_FIELDS = ("secretKeyRef", "accessKey", "secretKey", "authSecret", "accessKeySecret", "secretKeySecret")


def secret_refs(node: Any) -> Iterator[tuple[str, str]]:
    """(secret name, key) for every Secret reference, in core and Argo objects alike."""
    if isinstance(node, dict):
        for field, value in node.items():
            if field in SECRET_REF_FIELDS and isinstance(value, dict) and "key" in value:
                yield value["name"], value["key"]
            else:
                yield from secret_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from secret_refs(item)


def config_map_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for field, value in node.items():
            if field in ("configMapRef", "configMapKeyRef", "configMap") and isinstance(value, dict):
                yield value["name"]
            else:
                yield from config_map_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from config_map_refs(item)


def service_ports(overlay: list[Manifest]) -> dict[str, set[int]]:
    return {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind(overlay, "Service")}


def resolves(address: str, services: dict[str, set[int]]) -> bool:
    """host:port names a Service of this namespace (short or namespace-qualified name) and its port."""
    host, port = address.rsplit(":", 1)
    name, _, rest = host.partition(".")
    return name in services and int(port) in services[name] and rest in ("", "ctloop", "ctloop.svc")


def test_every_secret_reference_is_in_the_example(overlay: list[Manifest]) -> None:
    example = {
        s["metadata"]["name"]: set(s["stringData"])
        for s in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    }
    refs = {ref for manifest in overlay for ref in secret_refs(manifest)}
    assert len(refs) >= 5
    missing = sorted(f"{name}/{key}" for name, key in refs if key not in example.get(name, set()))
    assert not missing, f"referenced but absent from k8s/secrets.example.yaml: {missing}"


def test_every_config_map_reference_exists(overlay: list[Manifest]) -> None:
    present = {c["metadata"]["name"] for c in of_kind(overlay, "ConfigMap")}
    used = {name for manifest in overlay for name in config_map_refs(manifest)}
    assert {"ctloop-config", "ctloop-kafka", "ctloop-specs"} <= used
    assert used <= present, f"missing ConfigMaps: {sorted(used - present)}"


def test_every_service_account_reference_exists(overlay: list[Manifest]) -> None:
    present = {a["metadata"]["name"] for a in of_kind(overlay, "ServiceAccount")}
    used = set()
    for manifest in overlay:
        spec = manifest.get("spec", {})
        for holder in (spec, spec.get("template", {}), spec.get("template", {}).get("spec", {})):
            if isinstance(holder, dict) and "serviceAccountName" in holder:
                used.add(holder["serviceAccountName"])
    assert {"ctloop-sensor", "ctloop-workflow", "ctloop-eventsource"} <= used
    assert used <= present, f"missing ServiceAccounts: {sorted(used - present)}"


def test_kafka_event_sources_read_the_configured_bootstrap(overlay: list[Manifest]) -> None:
    """All Kafka users share ctloop-kafka's address; a new event the replacement misses shows here."""
    bootstrap = named(overlay, "ConfigMap", "ctloop-kafka")["data"]["CTLOOP_KAFKA_BOOTSTRAP"]
    kafka_events = [e for s in of_kind(overlay, "EventSource") for e in s["spec"].get("kafka", {}).values()]
    assert kafka_events
    assert {e["url"] for e in kafka_events} == {bootstrap}


def test_object_store_clients_reach_the_minio_service(overlay: list[Manifest]) -> None:
    services = service_ports(overlay)
    minio_events = [e for s in of_kind(overlay, "EventSource") for e in s["spec"].get("minio", {}).values()]
    assert minio_events
    for event in minio_events:
        assert resolves(event["endpoint"], services), event["endpoint"]
    for template in of_kind(overlay, "WorkflowTemplate"):
        for step in template["spec"]["templates"]:
            for artifact in step.get("outputs", {}).get("artifacts", []):
                if "s3" in artifact:
                    assert resolves(artifact["s3"]["endpoint"], services), artifact["s3"]["endpoint"]


def test_urls_in_config_are_services_of_the_build(overlay: list[Manifest]) -> None:
    services = service_ports(overlay)
    config = named(overlay, "ConfigMap", "ctloop-config")["data"]
    for key in ("CTLOOP_MLFLOW_TRACKING_URI", "CTLOOP_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
        assert resolves(config[key].removeprefix("http://"), services), f"{key}={config[key]}"


def test_the_train_step_memoizes_into_the_labelled_cache(overlay: list[Manifest]) -> None:
    caches = {
        c["metadata"]["name"]
        for c in of_kind(overlay, "ConfigMap")
        if c["metadata"].get("labels", {}).get("workflows.argoproj.io/configmap-type") == "Cache"
    }
    template = named(overlay, "WorkflowTemplate", "ctloop-retrain")
    train = next(t for t in template["spec"]["templates"] if t["name"] == "train")
    assert train["memoize"]["cache"]["configMap"]["name"] in caches


def test_sensors_and_event_sources_share_an_event_bus_of_the_build(overlay: list[Manifest]) -> None:
    buses = {b["metadata"]["name"] for b in of_kind(overlay, "EventBus")}
    users = [*of_kind(overlay, "Sensor"), *of_kind(overlay, "EventSource")]
    assert users
    for user in users:
        assert user["spec"].get("eventBusName", "default") in buses, user["metadata"]["name"]


def test_sensors_submit_the_template_of_the_build(overlay: list[Manifest]) -> None:
    templates = {t["metadata"]["name"] for t in of_kind(overlay, "WorkflowTemplate")}
    sources = {s["metadata"]["name"] for s in of_kind(overlay, "EventSource")}
    for sensor in of_kind(overlay, "Sensor"):
        for dependency in sensor["spec"]["dependencies"]:
            assert dependency["eventSourceName"] in sources
        for trigger in sensor["spec"]["triggers"]:
            # Sensors feed the admission gateway, which submits Workflows of the retrain template.
            assert trigger["template"]["kafka"]["topic"] == "ctloop.admission"
    assert "ctloop-retrain" in templates
    assert of_kind(overlay, "Deployment") and any(
        d["metadata"]["name"] == "ctloop-gateway" for d in of_kind(overlay, "Deployment"))

"""Secure by default: hardened containers, bounded resources, no credentials in manifests, and a
network that only opens the loop's own paths."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.k8s.manifests import (
    Manifest,
    env_lists,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selector_matches,
    workloads,
)

CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL|_USER$", re.I)


def test_every_container_is_non_root_read_only_and_capability_free(overlay: list[Manifest]) -> None:
    seen = 0
    for where, pod, container in workloads(overlay):
        seen += 1
        ctx, pod_ctx = container.get("securityContext", {}), pod.get("securityContext", {})
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("readOnlyRootFilesystem") is True, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not ctx.get("capabilities", {}).get("add"), where
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 0)) != 0, where
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        assert not ctx.get("privileged"), where
    assert seen >= 5


def test_read_only_containers_get_a_writable_tmp(overlay: list[Manifest]) -> None:
    for where, pod, container in workloads(overlay):
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in empty_dirs, f"{where} has no emptyDir at /tmp"


def test_every_container_has_cpu_and_memory_requests_and_limits(overlay: list[Manifest]) -> None:
    for where, _, container in workloads(overlay):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in resources.get(bound, {}), f"{where} lacks {bound}.{resource}"


def namespace_defaults(overlay: list[Manifest]) -> dict[str, dict[str, str]]:
    """What the namespace's LimitRange fills in for a container that states no bound."""
    defaults: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for limit_range in of_kind(overlay, "LimitRange"):
        for limit in limit_range["spec"]["limits"]:
            if limit["type"] == "Container":
                defaults["requests"].update(limit.get("defaultRequest", {}))
                defaults["limits"].update(limit.get("default", {}))
    return defaults


def test_the_namespace_bounds_containers_that_state_no_limits(overlay: list[Manifest]) -> None:
    """Argo's init/wait containers and Argo Events pods are built by controllers, not by us."""
    defaults = namespace_defaults(overlay)
    assert {"cpu", "memory"} <= set(defaults["requests"]) and {"cpu", "memory"} <= set(defaults["limits"])


def test_workflow_steps_have_requests_and_limits(overlay: list[Manifest]) -> None:
    defaults = namespace_defaults(overlay)
    steps = 0
    for template in of_kind(overlay, "WorkflowTemplate"):
        for step in template["spec"]["templates"]:
            body = step.get("script") or step.get("container")
            if body is None:
                continue  # DAG and steps templates start no pod of their own
            steps += 1
            resources = body.get("resources", {})
            for resource in ("cpu", "memory"):
                assert resource in resources.get("requests", {}), f"{step['name']} requests no {resource}"
                limit = resources.get("limits", {}).get(resource, defaults["limits"].get(resource))
                assert limit is not None, f"{step['name']} has no {resource} limit"
    assert steps


def test_workflow_pods_are_hardened_like_ours(overlay: list[Manifest]) -> None:
    for template in of_kind(overlay, "WorkflowTemplate"):
        pod_ctx = template["spec"]["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] != 0
        assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
        patch = yaml.safe_load(template["spec"]["podSpecPatch"])
        main = next(c for c in patch["containers"] if c["name"] == "main")
        ctx = main["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        tmp = next(m["name"] for m in main["volumeMounts"] if m["mountPath"] == "/tmp")
        assert any(v["name"] == tmp and "emptyDir" in v for v in patch["volumes"])


def test_no_credential_is_written_in_a_manifest(overlay: list[Manifest]) -> None:
    """Env vars that look like credentials come from a Secret, in every kind (Argo ones included)."""
    checked = 0
    for manifest in overlay:
        for path, env in env_lists(manifest):
            for var in env:
                if CREDENTIAL_NAME.search(var["name"]):
                    checked += 1
                    where = f"{manifest['kind']}/{manifest['metadata']['name']}{path}: {var['name']}"
                    assert "value" not in var, f"literal credential at {where}"
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"credential not from a Secret at {where}"
    assert checked >= 4
    for config in of_kind(overlay, "ConfigMap"):
        for key in config.get("data", {}):
            assert not CREDENTIAL_NAME.search(key), f"ConfigMap/{config['metadata']['name']} holds {key}"


def hardened(ctx: Manifest) -> bool:
    return (
        ctx.get("allowPrivilegeEscalation") is False
        and ctx.get("readOnlyRootFilesystem") is True
        and ctx.get("capabilities", {}).get("drop") == ["ALL"]
        and ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    )


def bounded(resources: Manifest) -> bool:
    return all({"cpu", "memory"} <= set(resources.get(bound, {})) for bound in ("requests", "limits"))


def test_sensor_and_event_source_pods_are_hardened_and_bounded(overlay: list[Manifest]) -> None:
    objects = [*of_kind(overlay, "Sensor"), *of_kind(overlay, "EventSource")]
    assert objects
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        template = obj["spec"]["template"]
        assert template["securityContext"]["runAsNonRoot"] is True, where
        container = template["container"]
        assert hardened(container["securityContext"]), where
        assert bounded(container["resources"]), where
        tmp = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert any(v["name"] == tmp and "emptyDir" in v for v in template["volumes"]), where


def test_event_bus_pods_are_hardened_and_bounded(overlay: list[Manifest]) -> None:
    buses = of_kind(overlay, "EventBus")
    assert buses
    for bus in buses:
        jetstream = bus["spec"]["jetstream"]
        assert jetstream["securityContext"]["runAsNonRoot"] is True
        for part in ("containerTemplate", "reloaderContainerTemplate", "metricsContainerTemplate"):
            assert hardened(jetstream[part]["securityContext"]), part
            assert bounded(jetstream[part]["resources"]), part


# --- NetworkPolicies ----------------------------------------------------------------------------------

CTLOOP_NS = {"kubernetes.io/metadata.name": "ctloop"}
WORKFLOW_POD = {"workflows.argoproj.io/workflow": "retrain-abc", "app.kubernetes.io/part-of": "ctloop"}
STRANGER = {"app": "something-else"}


def peer_allowed(peer: Manifest, labels: dict[str, str], namespace: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False
    ns_ok = (
        selector_matches(peer["namespaceSelector"], namespace)
        if "namespaceSelector" in peer
        else (namespace == CTLOOP_NS)
    )
    pod_ok = selector_matches(peer["podSelector"], labels) if "podSelector" in peer else True
    return ns_ok and pod_ok


def port_allowed(rule: Manifest, port: int) -> bool:
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


def allows(policies: list[Manifest], direction: str, pod: dict[str, str], port: int, peer: dict[str, str],
           peer_ns: dict[str, str]) -> bool:
    """Some rule of a policy selecting `pod` lets `peer` through on `port`, `direction` "ingress" or "egress"."""
    peers = "from" if direction == "ingress" else "to"
    rules = [
        r
        for p in policies
        if direction.capitalize() in p["spec"]["policyTypes"] and selector_matches(p["spec"]["podSelector"], pod)
        for r in p["spec"].get(direction, [])
    ]
    return any(
        port_allowed(r, port) and (peers not in r or any(peer_allowed(other, peer, peer_ns) for other in r[peers]))
        for r in rules
    )


def can_connect(
    policies: list[Manifest],
    source: dict[str, str],
    target: dict[str, str],
    port: int,
    source_ns: dict[str, str] = CTLOOP_NS,
) -> bool:
    """Both ends' policies must allow it: the target's ingress and (if in ctloop) the source's egress."""
    ingress_ok = allows(policies, "ingress", target, port, source, source_ns)
    if source_ns != CTLOOP_NS:
        return ingress_ok
    return ingress_ok and allows(policies, "egress", source, port, target, CTLOOP_NS)


def labels_of(overlay: list[Manifest], kind: str, name: str) -> dict[str, str]:
    return pod_labels(named(overlay, kind, name))


def container_port(overlay: list[Manifest], kind: str, name: str) -> int:
    return pod_spec(named(overlay, kind, name))["containers"][0]["ports"][0]["containerPort"]


def test_everything_is_denied_unless_opened(overlay: list[Manifest]) -> None:
    deny = named(overlay, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policies = of_kind(overlay, "NetworkPolicy")
    mlflow = labels_of(overlay, "Deployment", "ctloop-mlflow")
    assert not can_connect(policies, STRANGER, mlflow, 5000)


@pytest.mark.parametrize(
    ("source", "target", "port", "allowed"),
    [
        ("serving", "mlflow", 5000, True),
        ("monitor", "mlflow", 5000, True),
        ("workflow", "mlflow", 5000, True),
        ("minio", "mlflow", 5000, False),
        ("mlflow", "minio", 9000, True),
        ("workflow", "minio", 9000, True),
        ("serving", "minio", 9000, False),
        ("monitor", "minio", 9000, True),
        ("monitor", "serving", 8080, False),
        ("outcomes", "mlflow", 5000, True),
        ("outcomes", "minio", 9000, True),
        ("outcomes", "serving", 8080, False),
        ("workflow", "outcomes", 8080, False),
        ("minio-events", "minio", 9000, True),
        ("kafka-events", "minio", 9000, False),
    ],
)
def test_only_the_loops_paths_are_open(
    overlay: list[Manifest], source: str, target: str, port: int, allowed: bool
) -> None:
    pods = {
        "serving": labels_of(overlay, "Deployment", "ctloop-serving"),
        "monitor": labels_of(overlay, "Deployment", "ctloop-monitor"),
        "outcomes": labels_of(overlay, "Deployment", "ctloop-outcomes"),
        "mlflow": labels_of(overlay, "Deployment", "ctloop-mlflow"),
        "minio": labels_of(overlay, "StatefulSet", "ctloop-minio"),
        "workflow": WORKFLOW_POD,
        "minio-events": {"controller": "eventsource-controller", "eventsource-name": "ctloop-minio"},
        "kafka-events": {"controller": "eventsource-controller", "eventsource-name": "ctloop-kafka"},
    }
    assert can_connect(of_kind(overlay, "NetworkPolicy"), pods[source], pods[target], port) is allowed


def test_ports_in_policies_match_the_containers(overlay: list[Manifest]) -> None:
    assert container_port(overlay, "Deployment", "ctloop-mlflow") == 5000
    assert container_port(overlay, "StatefulSet", "ctloop-minio") == 9000
    serving_port = container_port(overlay, "Deployment", "ctloop-serving")
    outside = {"kubernetes.io/metadata.name": "ingress-nginx"}
    serving = labels_of(overlay, "Deployment", "ctloop-serving")
    assert can_connect(of_kind(overlay, "NetworkPolicy"), STRANGER, serving, serving_port, source_ns=outside)


def test_the_outcomes_pod_lets_in_its_metrics_port_alone(overlay: list[Manifest]) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    outcomes = labels_of(overlay, "Deployment", "ctloop-outcomes")
    scraper = {"kubernetes.io/metadata.name": "monitoring"}
    port = container_port(overlay, "Deployment", "ctloop-outcomes")
    assert port == 9464
    assert can_connect(policies, STRANGER, outcomes, port, source_ns=scraper)
    assert not can_connect(policies, STRANGER, outcomes, 8080, source_ns=scraper)


def test_the_manual_webhook_is_reachable_from_outside(overlay: list[Manifest]) -> None:
    webhook = named(overlay, "EventSource", "ctloop-webhook")
    port = int(next(iter(webhook["spec"]["webhook"].values()))["port"])
    pod = {"controller": "eventsource-controller", "eventsource-name": "ctloop-webhook"}
    outside = {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert can_connect(of_kind(overlay, "NetworkPolicy"), STRANGER, pod, port, source_ns=outside)


def test_every_pod_may_resolve_names(overlay: list[Manifest]) -> None:
    dns = named(overlay, "NetworkPolicy", "allow-dns")["spec"]
    assert dns["podSelector"] == {}
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {("UDP", 53), ("TCP", 53)}


@pytest.mark.parametrize("component", ["monitor", "serving", "outcomes"])
def test_bus_clients_may_reach_kafka(overlay: list[Manifest], component: str) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    labels = labels_of(overlay, "Deployment", f"ctloop-{component}")
    kafka_ns = {"kubernetes.io/metadata.name": "kafka"}
    egress = [
        r
        for p in policies
        if "Egress" in p["spec"]["policyTypes"] and selector_matches(p["spec"]["podSelector"], labels)
        for r in p["spec"].get("egress", [])
    ]
    assert any(
        port_allowed(r, 9092) and any(peer_allowed(peer, {}, kafka_ns) for peer in r.get("to", [])) for r in egress
    )

"""Least privilege: each component's identity can do exactly what the loop needs of the API."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import Manifest, named, of_kind, pod_spec

Grant = tuple[str, str, str, str]  # api group, resource, verb, resource name ("" = any)

NO_API_ACCESS = ("ctloop-serving", "ctloop-monitor", "ctloop-outcomes", "ctloop-mlflow", "ctloop-minio",
                 "ctloop-eventsource")


def grants(overlay: list[Manifest], service_account: str) -> set[Grant]:
    """Everything the RoleBindings in the build give one ServiceAccount."""
    result: set[Grant] = set()
    for binding in [*of_kind(overlay, "RoleBinding"), *of_kind(overlay, "ClusterRoleBinding")]:
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
            continue
        role = named(overlay, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        for rule in role["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            result.add((group, resource, verb, name))
    return result


def test_the_sensor_creates_and_lists_workflows_and_reads_only_the_retrain_template(overlay: list[Manifest]) -> None:
    # `get` on the one template is what the argoWorkflow trigger's `argo submit` needs: it validates
    # the new Workflow against the WorkflowTemplate it references before creating it.
    assert grants(overlay, "ctloop-sensor") == {
        ("argoproj.io", "workflows", "create", ""),
        ("argoproj.io", "workflows", "list", ""),
        ("argoproj.io", "workflowtemplates", "get", "ctloop-retrain"),
    }


def test_workflow_pods_only_report_task_results(overlay: list[Manifest]) -> None:
    assert grants(overlay, "ctloop-workflow") == {
        ("argoproj.io", "workflowtaskresults", "create", ""),
        ("argoproj.io", "workflowtaskresults", "patch", ""),
    }


def test_roles_are_namespaced_and_bind_only_their_own_account(overlay: list[Manifest]) -> None:
    for binding in of_kind(overlay, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert [s["name"] for s in binding["subjects"]] == [binding["metadata"]["name"]]
        for subject in binding["subjects"]:
            assert subject.get("namespace", "ctloop") == "ctloop"


@pytest.mark.parametrize("account", NO_API_ACCESS)
def test_components_without_api_needs_have_no_grants_and_no_token(overlay: list[Manifest], account: str) -> None:
    assert grants(overlay, account) == set()
    assert named(overlay, "ServiceAccount", account)["automountServiceAccountToken"] is False
    users = [
        w
        for w in overlay
        if w["kind"] in ("Deployment", "StatefulSet", "Job") and pod_spec(w)["serviceAccountName"] == account
    ]
    for workload in users:
        assert pod_spec(workload)["automountServiceAccountToken"] is False, workload["metadata"]["name"]


def test_every_component_runs_under_its_own_account(overlay: list[Manifest]) -> None:
    expected = {
        ("Deployment", "ctloop-serving"): "ctloop-serving",
        ("Deployment", "ctloop-monitor"): "ctloop-monitor",
        ("Deployment", "ctloop-outcomes"): "ctloop-outcomes",
        ("Deployment", "ctloop-mlflow"): "ctloop-mlflow",
        ("StatefulSet", "ctloop-minio"): "ctloop-minio",
    }
    for (kind, name), account in expected.items():
        assert pod_spec(named(overlay, kind, name))["serviceAccountName"] == account


def test_argo_objects_use_the_least_privileged_accounts(overlay: list[Manifest]) -> None:
    for template in of_kind(overlay, "WorkflowTemplate"):
        assert template["spec"]["serviceAccountName"] == "ctloop-workflow"
    sensors = of_kind(overlay, "Sensor")
    assert sensors
    for sensor in sensors:
        assert sensor["spec"]["template"]["serviceAccountName"] == "ctloop-sensor", sensor["metadata"]["name"]
    for source in of_kind(overlay, "EventSource"):
        assert source["spec"]["template"]["serviceAccountName"] == "ctloop-eventsource", source["metadata"]["name"]

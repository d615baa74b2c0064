"""Helpers for checking the built kustomize output: build, schema loading, pod and selector walks."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# A worktree's parent has no shared/: CTLOOP_SCHEMAS_DIR points at the schemas from there.
SCHEMAS = Path(os.environ.get("CTLOOP_SCHEMAS_DIR") or REPO.parent / "shared" / "schemas")

ARGO_EVENTS_KINDS = ("EventBus", "EventSource", "Sensor")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")

Manifest = dict[str, Any]


def kustomize_command() -> list[str] | None:
    """The kustomize build command available here, or None."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


class _KubeLoader(yaml.SafeLoader):
    """YAML as the API server reads it: a bare `=` (kustomize's output for Argo's `comparator: "="`)
    is the string "=", not PyYAML's YAML 1.1 `value` tag."""


_KubeLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def build(path: Path) -> list[Manifest]:
    command = kustomize_command()
    assert command is not None, "neither kubectl nor kustomize on PATH"
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"kustomize build of {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.load_all(done.stdout, Loader=_KubeLoader) if doc]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def pod_template(workload: Manifest) -> Manifest:
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]


def pod_spec(workload: Manifest) -> Manifest:
    return workload["spec"] if workload["kind"] == "Pod" else pod_template(workload)["spec"]


def pod_labels(workload: Manifest) -> dict[str, str]:
    return pod_template(workload)["metadata"]["labels"]


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def workloads(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(name, pod spec, container) for every container of every core workload."""
    for workload in manifests:
        if workload["kind"] in WORKLOAD_KINDS:
            spec = pod_spec(workload)
            for container in containers(spec):
                yield f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}", spec, container


def env_lists(node: Any, path: str = "") -> Iterator[tuple[str, list[Manifest]]]:
    """Every `env:` list anywhere in a manifest (core pods, Argo templates, event sources alike)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield f"{path}.env", value
            else:
                yield from env_lists(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from env_lists(item, f"{path}[{i}]")


def selector_matches(selector: Manifest | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# --- schemas ---------------------------------------------------------------------------------------


def _int_or_string_and_closed(node: Any) -> Any:
    """The schemas README's fix-up of a CRD schema: int-or-string as anyOf, unknown fields rejected."""
    if isinstance(node, list):
        return [_int_or_string_and_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _int_or_string_and_closed(value) for key, value in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    return node


@cache
def workflow_template_schema() -> Manifest:
    # 2.7 MB of YAML: libyaml's loader where present takes a second, the pure-Python one twenty.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((SCHEMAS / "argo-wf-crd-workflowtemplate.yaml").read_text(), Loader=loader)
    return _int_or_string_and_closed(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@cache
def argo_events_definitions() -> Manifest:
    """Argo Events 1.9's definitions, closed like the CRD schema so that a misspelt field fails."""
    raw = json.loads((SCHEMAS / "argo-events-schema.json").read_text())["definitions"]
    definitions = {name: _int_or_string_and_closed(copy.deepcopy(schema)) for name, schema in raw.items()}
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "anyOf": [{"type": "string"}, {"type": "integer"}]
    }
    return definitions


def argo_events_schema(kind: str) -> Manifest:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/definitions/io.argoproj.events.v1alpha1.{kind}",
        "definitions": argo_events_definitions(),
    }


# --- core kinds through the kubernetes client's models ----------------------------------------------


def model_name(manifest: Manifest) -> str:
    """V1Deployment, V2HorizontalPodAutoscaler, ...: the client's class for a manifest's kind."""
    version = manifest["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + manifest["kind"]


def dropped_fields(original: Any, roundtrip: Any, path: str = "") -> list[str]:
    """Paths present in the manifest but lost after loading it into the client's model."""
    if isinstance(original, dict):
        if not isinstance(roundtrip, dict):
            return [path or "."]
        lost = []
        for key, value in original.items():
            if key not in roundtrip:
                if value not in ({}, [], None):
                    lost.append(f"{path}.{key}")
            else:
                lost += dropped_fields(value, roundtrip[key], f"{path}.{key}")
        return lost
    if isinstance(original, list):
        if not isinstance(roundtrip, list) or len(original) != len(roundtrip):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(original, roundtrip, strict=True))
            for p in dropped_fields(a, b, f"{path}[{i}]")
        ]
    return [] if original == roundtrip else [f"{path} ({original!r} became {roundtrip!r})"]

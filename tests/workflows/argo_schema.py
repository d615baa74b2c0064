"""The Argo v4 WorkflowTemplate CRD schema, prepared as /work/shared/schemas/README.md says (strict objects)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# A worktree's parent has no shared/: CTLOOP_SCHEMAS_DIR points at the schemas from there (as tests/k8s does).
SCHEMAS = Path(os.environ.get("CTLOOP_SCHEMAS_DIR")
               or Path(__file__).resolve().parents[2].parent / "shared" / "schemas")
CRD = SCHEMAS / "argo-wf-crd-workflowtemplate.yaml"


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if node.pop("x-kubernetes-int-or-string", False):
            node = {k: v for k, v in node.items() if k != "type"}
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def workflow_template_schema() -> dict[str, Any]:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def schema_errors(document: dict[str, Any]) -> list[str]:
    from jsonschema import Draft7Validator

    validator = Draft7Validator(workflow_template_schema())  # the CRD is large: parse and prepare it once
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]

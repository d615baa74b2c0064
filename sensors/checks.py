"""Rules on rendered Sensors that the Argo Events schema cannot express."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ctloop.sensors.spec import COMPARATORS

FILTER_TYPES = ("string", "number", "bool")


def _exists(obj: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return False
    return True


def sensor_problems(sensor: Mapping[str, Any], event_sources: Iterable[Mapping[str, Any]],
                    template_parameters: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Everything wrong with `sensor` given the EventSources and, when known, each WorkflowTemplate's
    parameter names; an empty list means it is consistent."""
    name = sensor["metadata"]["name"]
    spec = sensor["spec"]
    problems = []
    offered = {(es["metadata"]["name"], event)
               for es in event_sources for kind, events in es["spec"].items() if isinstance(events, dict)
               and kind not in ("template", "service") for event in events}
    deps = {d["name"]: d for d in spec["dependencies"]}
    for dep in deps.values():
        if (dep["eventSourceName"], dep["eventName"]) not in offered:
            problems.append(f"{name}: dependency {dep['name']} names {dep['eventSourceName']}/{dep['eventName']},"
                            " which no EventSource offers")
        for f in dep.get("filters", {}).get("data", []):
            if f.get("comparator", "=") not in COMPARATORS:
                problems.append(f"{name}: filter on {f['path']} has invalid comparator {f.get('comparator')!r}")
            if f["type"] not in FILTER_TYPES:
                problems.append(f"{name}: filter on {f['path']} has invalid type {f['type']!r}")
    for trigger in spec["triggers"]:
        problems += _kafka_problems(name, trigger["template"].get("kafka"), deps)
        workflow = trigger["template"].get("argoWorkflow")
        if workflow is None:
            continue
        resource = workflow["source"]["resource"]
        for param in workflow.get("parameters", []):
            if param["src"]["dependencyName"] not in deps:
                problems.append(f"{name}: parameter for {param['dest']} uses unknown dependency "
                                f"{param['src']['dependencyName']!r}")
            if not _exists(resource, param["dest"]):
                problems.append(f"{name}: parameter dest {param['dest']} does not exist in the Workflow")
        ref = resource["spec"].get("workflowTemplateRef", {}).get("name")
        if template_parameters is not None:
            if ref not in template_parameters:
                problems.append(f"{name}: workflowTemplateRef {ref!r} is not a rendered WorkflowTemplate")
            else:
                declared = set(template_parameters[ref])
                for arg in resource["spec"]["arguments"]["parameters"]:
                    if arg["name"] not in declared:
                        problems.append(f"{name}: argument {arg['name']!r} is not a parameter of {ref}")
    return problems


def _kafka_problems(name: str, kafka: Mapping[str, Any] | None, deps: Mapping[str, Any]) -> list[str]:
    """A Kafka trigger onto the admission topic: known dependencies, every field the gateway needs, and a key."""
    from ctloop.sensors.gateway.request import REQUIRED

    if kafka is None:
        return []
    problems = []
    for param in [*kafka.get("payload", []), *kafka.get("parameters", [])]:
        if param["src"]["dependencyName"] not in deps:
            problems.append(f"{name}: parameter for {param['dest']} uses unknown dependency "
                            f"{param['src']['dependencyName']!r}")
    missing = sorted(set(REQUIRED) - {p["dest"] for p in kafka.get("payload", [])})
    if missing:
        problems.append(f"{name}: the admission payload lacks {', '.join(missing)}")
    if not any(p["dest"] == "partitioningKey" for p in kafka.get("parameters", [])):
        problems.append(f"{name}: the admission trigger is not keyed by model (no partitioningKey parameter)")
    return problems

"""Sensor specs rendered to Argo Events 1.9 objects: EventBus, EventSources and Sensors (plain dicts)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ctloop.sensors.spec import (
    WORKFLOW_NAME,
    WORKFLOW_PARAMETERS,
    CalendarSource,
    Concat,
    Const,
    Context,
    DataFilter,
    ExprFilter,
    KafkaSource,
    KeyOf,
    MinioSource,
    ParamSource,
    Path,
    Segment,
    SensorSpec,
    Source,
    SpecError,
    WebhookSource,
    WorkflowName,
    check_path,
)

API_VERSION = "argoproj.io/v1alpha1"
LABELS = {"app.kubernetes.io/part-of": "ctloop", "app.kubernetes.io/component": "sensors"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _metadata(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(LABELS)}


def event_bus(namespace: str, name: str = "default", replicas: int = 3) -> dict[str, Any]:
    """A JetStream EventBus with persistent storage, so events survive a bus pod restart."""
    return {
        "apiVersion": API_VERSION, "kind": "EventBus", "metadata": _metadata(name, namespace),
        "spec": {"jetstream": {"version": "latest", "replicas": replicas,
                               "persistence": {"accessMode": "ReadWriteOnce", "volumeSize": "10Gi"}}},
    }


def _source_entry(source: Source) -> tuple[str, dict[str, Any]]:
    if isinstance(source, KafkaSource):
        return "kafka", {
            "url": source.url, "topic": source.topic, "jsonBody": True,
            # A named group with `oldest` resumes where it stopped: nothing produced while down is missed.
            "consumerGroup": {"groupName": source.consumer_group, "oldest": True},
            "connectionBackoff": {"steps": 10, "duration": "1s", "factor": 2.0, "jitter": 0.2},
        }
    if isinstance(source, MinioSource):
        return "minio", {
            "endpoint": source.endpoint, "bucket": {"name": source.bucket}, "events": list(source.events),
            "filter": {"prefix": source.prefix, "suffix": source.suffix}, "insecure": source.insecure,
            "accessKey": {"name": source.access_key.name, "key": source.access_key.key},
            "secretKey": {"name": source.secret_key.name, "key": source.secret_key.key},
        }
    if isinstance(source, CalendarSource):
        # No persistence: Argo Events' catch-up would replay every missed tick, and its ConfigMap store
        # needs an API token the event-source account does not have. See docs/schedules.md.
        timer = ({"schedule": source.schedule, "timezone": source.timezone} if source.schedule
                 else {"interval": source.interval})
        return "calendar", {**timer, "metadata": dict(source.metadata)}
    return "webhook", {
        "port": str(source.port), "endpoint": source.endpoint, "method": source.method, "url": "",
        "authSecret": {"name": source.auth_secret.name, "key": source.auth_secret.key},
    }


def event_sources(specs: Iterable[SensorSpec], namespace: str, bus: str = "default") -> list[dict[str, Any]]:
    """One EventSource per source name, holding every event the sensors depend on."""
    grouped: dict[str, dict[str, Any]] = {}
    for spec in specs:
        source = spec.dependency.source
        kind, entry = _source_entry(source)
        obj = grouped.setdefault(source.source, {
            "apiVersion": API_VERSION, "kind": "EventSource", "metadata": _metadata(source.source, namespace),
            "spec": {"eventBusName": bus},
        })
        events = obj["spec"].setdefault(kind, {})
        if events.get(source.event, entry) != entry:
            raise SpecError(f"event source {source.source}/{source.event} is defined twice, differently")
        events[source.event] = entry
        if isinstance(source, WebhookSource):
            obj["spec"]["service"] = {"ports": [{"port": source.port, "targetPort": source.port}]}
    return list(grouped.values())


def _data_filter(f: DataFilter) -> dict[str, Any]:
    return {"path": f.path, "type": f.type, "value": list(f.values), "comparator": f.comparator}


def _expr_filter(f: ExprFilter) -> dict[str, Any]:
    return {"expr": f.expr, "fields": [{"name": n, "path": p} for n, p in f.fields]}


def go_ref(path: str) -> str:
    """A Go-template reference to `path` in the event data; `index` where a part is not an identifier."""
    expr = ".Input"
    for part in check_path(path):
        if _IDENT.match(part):
            expr = f"{expr}.{part}"
        else:
            expr = f"(index {expr} {part if part.isdigit() else json.dumps(part)})"
    return expr


def go_expr(source: ParamSource) -> str:
    """The Go-template (sprig) expression computing what `ctloop.sensors.mapping.resolve` computes locally."""
    if isinstance(source, Path):
        return go_ref(source.path)
    if isinstance(source, Const):
        return json.dumps(source.value)
    if isinstance(source, Concat):
        return "(printf " + json.dumps("%v" * len(source.parts)) + "".join(f" {go_expr(p)}" for p in source.parts) + ")"
    if isinstance(source, Segment):
        return f'(index (splitList "/" {go_expr(source.of)}) {source.index})'
    if isinstance(source, KeyOf):
        digest = f"(default {go_expr(source.fallback)} {go_expr(source.digest)})"
        fmt = json.dumps("%v\n%v\n%v")
        version = json.dumps(source.code_version)
        if source.model_versions:
            # sprig's `get` gives "" for a model not in the map, and `default` then the shared version.
            pairs = " ".join(f"{json.dumps(m)} {json.dumps(v)}" for m, v in sorted(source.model_versions.items()))
            version = f'(get (dict {pairs}) (printf "%v" {go_expr(source.model)}) | default {version})'
        return f"(printf {fmt} {go_expr(source.model)} {digest} {version} | sha256sum | trunc 32)"
    if isinstance(source, WorkflowName):
        slug = (f'(regexReplaceAll "-+$" (trunc 34 (trimAll "-" (regexReplaceAll "[^a-z0-9-]+" '
                f'(lower {go_expr(source.model)}) "-"))) "" | default "model")')
        return f'(printf "retrain-%s-%s" {slug} (trunc 20 {go_expr(source.key)}))'

    raise SpecError(f"{source!r} cannot be used inside a template")


def _param_source(dependency: str, source: ParamSource) -> dict[str, Any]:
    if isinstance(source, Path):
        return {"dependencyName": dependency, "dataKey": source.path}
    if isinstance(source, Context):
        return {"dependencyName": dependency, "contextKey": source.key}
    return {"dependencyName": dependency, "dataTemplate": "{{ " + go_expr(source) + " }}"}


def parameter_dest(name: str) -> str:
    if name == WORKFLOW_NAME:
        return "metadata.name"
    return f"spec.arguments.parameters.{WORKFLOW_PARAMETERS.index(name)}.value"


def workflow_resource(spec: SensorSpec, namespace: str) -> dict[str, Any]:
    """The Workflow the trigger submits: a reference to the retrain template, constants filled in."""
    params = [{"name": n, "value": spec.params[n].value if isinstance(spec.params[n], Const) else ""}
              for n in WORKFLOW_PARAMETERS]
    return {
        "apiVersion": API_VERSION, "kind": "Workflow",
        "metadata": {"name": "retrain-pending", "namespace": namespace,
                     "labels": {**LABELS, "ctloop.io/sensor": spec.name}},
        "spec": {"workflowTemplateRef": {"name": spec.template}, "arguments": {"parameters": params}},
    }


def admission_payload_parameters(spec: SensorSpec) -> list[dict[str, Any]]:
    """The Kafka trigger's payload: every trigger parameter under its own name, plus `gpu`, as
    `ctloop.sensors.gateway.request.admission_payload` computes them."""
    from ctloop.sensors.gateway.request import GPU, gpu_path

    dep = spec.dependency.name
    out = [{"src": _param_source(dep, source) if not isinstance(source, Const)
            else {"dependencyName": dep, "dataTemplate": "{{ " + go_expr(source) + " }}"}, "dest": name}
           for name, source in spec.params.items()]
    path = gpu_path(spec)
    gpu = f"default false {go_ref(path)}" if path else '"false"'
    out.append({"src": {"dependencyName": dep, "dataTemplate": "{{ " + gpu + " }}"}, "dest": GPU})
    return out


def sensor(spec: SensorSpec, namespace: str, *, kafka_url: str, admission_topic: str) -> dict[str, Any]:
    """The Argo Events Sensor: the spec's filters, and a Kafka trigger that puts the candidate run on the
    admission topic keyed by model, for the admission gateway to decide (see ctloop.sensors.gateway)."""
    dep = spec.dependency
    filters: dict[str, Any] = {}
    if dep.data:
        filters["data"] = [_data_filter(f) for f in dep.data]
    if dep.exprs:
        filters["exprs"] = [_expr_filter(f) for f in dep.exprs]
    dependency = {"name": dep.name, "eventSourceName": dep.source.source, "eventName": dep.source.event}
    if filters:
        dependency["filters"] = filters
    model = spec.params["model"]
    key_source = ({"dependencyName": dep.name, "dataTemplate": "{{ " + go_expr(model) + " }}"}
                  if isinstance(model, Const) else _param_source(dep.name, model))
    retry = spec.retry
    return {
        "apiVersion": API_VERSION, "kind": "Sensor", "metadata": _metadata(spec.name, namespace),
        "spec": {
            "eventBusName": spec.event_bus,
            "template": {"serviceAccountName": spec.service_account},
            "dependencies": [dependency],
            "triggers": [{
                "template": {"name": "admission", "kafka": {
                    "url": kafka_url, "topic": admission_topic,
                    # Every replica of the broker acknowledges before the event counts as triggered.
                    "requiredAcks": -1,
                    "partitioningKey": "",
                    "payload": admission_payload_parameters(spec),
                    # Keyed by model: one partition, so one gateway replica, decides each model.
                    "parameters": [{"src": key_source, "dest": "partitioningKey"}],
                }},
                # At-least-once delivery is safe: the gateway skips an event id it has decided.
                "atLeastOnce": True,
                "retryStrategy": {"steps": retry.steps, "duration": retry.duration, "factor": retry.factor,
                                  "jitter": retry.jitter},
            }],
        },
    }

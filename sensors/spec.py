"""Sensor specs: which events fire a retrain, and how their fields map onto the workflow's parameters.

One definition, two engines: `ctloop.sensors.manifests` renders these to Argo Events objects and
`ctloop.sensors.local.LocalSensor` interprets the very same objects over a ctloop bus. Every construct
here has a rendering and a local meaning; anything without both is rejected at construction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

Comparator = Literal["=", "!=", ">", ">=", "<", "<="]
COMPARATORS: tuple[str, ...] = ("=", "!=", ">", ">=", "<", "<=")
FilterType = Literal["string", "number", "bool"]
TriggerKind = Literal["data", "drift", "manual", "schedule", "quality"]

# The retrain WorkflowTemplate's parameters that a sensor fills in.
WORKFLOW_PARAMETERS: tuple[str, ...] = ("model", "data-uri", "event-id", "trigger", "idempotency-key")
WORKFLOW_NAME = "workflow-name"

_PATH_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")


class SpecError(ValueError):
    """A sensor spec that cannot be rendered or interpreted; the message names the field."""


@cache
def check_path(path: str) -> tuple[str, ...]:
    """A gjson path restricted to what both engines agree on: dotted keys and array indexes."""
    parts = tuple(path.split("."))
    if not path or not all(_PATH_PART.match(p) for p in parts):
        raise SpecError(f"unsupported path {path!r}: use dotted keys and numeric indexes, no wildcards")
    return parts


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise SpecError(f"invalid {what} name {name!r}: must be a lowercase DNS label")
    return name


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class KafkaSource:
    """A Kafka topic read by an EventSource with its own consumer group (nothing missed while down)."""

    source: str
    event: str
    topic: str
    url: str
    consumer_group: str


@dataclass(frozen=True)
class MinioSource:
    """MinIO bucket notifications for objects under `prefix` ending in `suffix`."""

    source: str
    event: str
    endpoint: str
    bucket: str
    prefix: str
    suffix: str
    access_key: SecretRef
    secret_key: SecretRef
    events: tuple[str, ...] = ("s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload")
    insecure: bool = True


@dataclass(frozen=True)
class WebhookSource:
    """An HTTP endpoint for manual triggers, guarded by a bearer token kept in a secret."""

    source: str
    event: str
    port: int
    endpoint: str
    auth_secret: SecretRef
    method: str = "POST"


@dataclass(frozen=True)
class CalendarSource:
    """Argo Events calendar ticks: a cron `schedule` in `timezone`, or every `interval`. Each event's data is
    `{"eventTime": ..., "metadata": {...}}`, with `metadata` copied from here."""

    source: str
    event: str
    metadata: tuple[tuple[str, str], ...]
    schedule: str = ""
    timezone: str = ""
    interval: str = ""

    def __post_init__(self) -> None:
        if bool(self.schedule) == bool(self.interval):
            raise SpecError(f"calendar event {self.source}/{self.event}: set exactly one of schedule and interval")


Source = KafkaSource | MinioSource | WebhookSource | CalendarSource


@dataclass(frozen=True)
class DataFilter:
    """Argo Events data filter: passes when any value satisfies `comparator` (strings are regexes)."""

    path: str
    type: FilterType
    values: tuple[str, ...]
    comparator: Comparator = "="
    # Why an event that fails this filter is refused, for the decision log (not rendered: Argo Events
    # has no such field). `{dotted.path}` is replaced by that value of the event data.
    reason: str | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        if self.comparator not in COMPARATORS:
            raise SpecError(f"invalid comparator {self.comparator!r} on {self.path}: use one of {COMPARATORS}")
        if self.type == "string" and self.comparator not in ("=", "!="):
            raise SpecError(f"comparator {self.comparator!r} on string filter {self.path}: only = and != apply")
        if not self.values:
            raise SpecError(f"data filter on {self.path} has no values")
        for value in self.values:
            _check_value(self.type, value, self.path)


def _check_value(kind: FilterType, value: str, path: str) -> None:
    try:
        if kind == "number":
            float(value)
        elif kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise ValueError(value)
        else:
            re.compile(value)
    except (ValueError, re.error) as exc:
        raise SpecError(f"invalid {kind} value {value!r} for filter on {path}: {exc}") from None


@dataclass(frozen=True)
class ExprFilter:
    """Argo Events expr filter: a boolean expression over named fields taken from paths."""

    expr: str
    fields: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        from ctloop.sensors.expr import ExprError, compile_expr

        for _, path in self.fields:
            check_path(path)
        try:
            compile_expr(self.expr, {name for name, _ in self.fields})
        except ExprError as exc:
            raise SpecError(str(exc)) from None


@dataclass(frozen=True)
class Path:
    """A value read from the event data at a gjson path."""

    path: str

    def __post_init__(self) -> None:
        check_path(self.path)


@dataclass(frozen=True)
class Const:
    value: str


@dataclass(frozen=True)
class Context:
    """A CloudEvent context attribute of the event as the sensor received it (e.g. `id`)."""

    key: Literal["id", "source", "type", "subject"]


@dataclass(frozen=True)
class Concat:
    """Parts joined into one string."""

    parts: tuple[Path | Const, ...]


@dataclass(frozen=True)
class Segment:
    """The `index`-th `/`-separated segment of a path's value (e.g. the model in `incoming/<model>/x`)."""

    of: Path
    index: int


@dataclass(frozen=True)
class KeyOf:
    """The run's idempotency key: sha256 of model, data digest (else `fallback`) and code version: the model's
    entry in `model_versions` (a model with a trainer of its own), else `code_version`.

    `model_versions` may be a live mapping (the local sensor's hashes the trainer's package on each lookup),
    so the spec is not hashable; compare and memoize keys by identity."""

    model: Path | Const | Segment
    digest: Path
    fallback: Path | Concat
    code_version: str
    model_versions: Mapping[str, str] = field(default_factory=dict, hash=False)

    def version_of(self, model: str) -> str:
        return self.model_versions.get(model) or self.code_version


@dataclass(frozen=True)
class WorkflowName:
    """The Workflow's name, `retrain-<model slug>-<key[:20]>` as `ctloop.workflows.argo_engine` names it, so a
    second submit of a key fails on Argo with AlreadyExists, whichever path submitted first."""

    model: Path | Const | Segment
    key: KeyOf


ParamSource = Path | Const | Context | Concat | Segment | KeyOf | WorkflowName


@dataclass(frozen=True)
class Dependency:
    name: str
    source: Source
    data: tuple[DataFilter, ...] = ()
    exprs: tuple[ExprFilter, ...] = ()


@dataclass(frozen=True)
class Retry:
    steps: int = 3
    duration: str = "1s"
    factor: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True)
class SensorSpec:
    """One dependency, one `argoWorkflow` trigger that submits the retrain WorkflowTemplate."""

    name: str
    dependency: Dependency
    params: dict[str, ParamSource] = field(hash=False)
    template: str = "ctloop-retrain"
    service_account: str = "ctloop-sensor"
    retry: Retry = Retry()
    event_bus: str = "default"

    def __post_init__(self) -> None:
        check_name(self.name, "sensor")
        check_name(self.dependency.name, "dependency")
        missing = [p for p in (*WORKFLOW_PARAMETERS, WORKFLOW_NAME) if p not in self.params]
        unknown = [p for p in self.params if p not in (*WORKFLOW_PARAMETERS, WORKFLOW_NAME)]
        if missing or unknown:
            raise SpecError(f"sensor {self.name}: parameters missing {missing}, unknown {unknown}")
        if not isinstance(self.params[WORKFLOW_NAME], WorkflowName):
            raise SpecError(f"sensor {self.name}: {WORKFLOW_NAME} must derive from the idempotency key")

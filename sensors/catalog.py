"""ctloop's own sensors: data arrivals, drift and degraded live quality from Kafka, MinIO notifications and
manual webhooks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ctloop.modelspec import MODEL_NAME_OUTSIDE, MODEL_NAME_RULE, MODEL_NAME_START, ModelSpec, load_specs, specs_dir
from ctloop.sensors.spec import (
    CalendarSource,
    Concat,
    Const,
    Context,
    DataFilter,
    Dependency,
    ExprFilter,
    KafkaSource,
    KeyOf,
    MinioSource,
    ParamSource,
    Path,
    SecretRef,
    Segment,
    SensorSpec,
    SpecError,
    WebhookSource,
    WorkflowName,
)
from ctloop.sensors.versions import CodeVersions, local_versions
from ctloop.settings import Settings

ANY = ("^.+$",)
CALENDAR_SOURCE = "ctloop-calendar"
SCHEDULE_PREFIX = "ctloop-schedule-"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class ClusterEndpoints:
    """Where the in-cluster event sources connect; the names the k8s base deploys."""

    kafka_url: str = "kafka.ctloop.svc:9092"
    consumer_group: str = "ctloop-argo-events"
    minio_endpoint: str = "minio.ctloop.svc:9000"
    minio_bucket: str = "ctloop-data"
    minio_prefix: str = "incoming/"
    minio_suffix: str = ".parquet"
    minio_secret: str = "ctloop-minio"
    webhook_port: int = 12000
    webhook_secret: str = "ctloop-webhook"


def _model_named(path: str) -> tuple[DataFilter, ...]:
    """The event's model follows the spec's name rule, as two regexes both engines read alike (a `$` would
    not: Python's matches before a trailing newline, Go's does not)."""
    reason = f"model name {{{path}}} breaks the rule: model names are {MODEL_NAME_RULE}"
    return (DataFilter(path, "string", (MODEL_NAME_START,), reason=reason),
            DataFilter(path, "string", (MODEL_NAME_OUTSIDE,), comparator="!=", reason=reason))


# Every event the bus carries has an id; without one Argo's key template would hash "<nil>" in its place.
_HAS_ID = DataFilter("body.id", "string", ANY, reason="event has no id")


Versions = str | CodeVersions


def _key(model: Path | Const | Segment, digest: str, fallback: Path | Concat, code_version: Versions) -> KeyOf:
    versions = code_version if isinstance(code_version, CodeVersions) else CodeVersions(code_version)
    return KeyOf(model=model, digest=Path(digest), fallback=fallback, code_version=versions.default,
                 model_versions=versions.models)


def _params(model: ParamSource, uri: ParamSource, event_id: ParamSource, trigger: str,
            key: KeyOf) -> dict[str, ParamSource]:
    return {
        "model": model, "data-uri": uri, "event-id": event_id, "trigger": Const(trigger),
        "idempotency-key": key, "workflow-name": WorkflowName(key.model, key),
    }


def data_arrived_sensor(settings: Settings, code_version: Versions, where: ClusterEndpoints) -> SensorSpec:
    source = KafkaSource("ctloop-kafka", "data-arrived", settings.topics.data, where.kafka_url, where.consumer_group)
    dependency = Dependency(
        "data-arrived", source,
        data=(DataFilter("body.type", "string", (r"^ctloop\.data\.arrived$",)), _HAS_ID,
              *_model_named("body.data.model"),
              DataFilter("body.data.uri", "string", ANY)),
    )
    key = _key(Path("body.data.model"), "body.data.digest", Path("body.id"), code_version)
    return SensorSpec("ctloop-data-arrived", dependency,
                      _params(Path("body.data.model"), Path("body.data.uri"), Path("body.id"), "data", key))


def drift_sensor(settings: Settings, code_version: Versions, where: ClusterEndpoints) -> SensorSpec:
    source = KafkaSource("ctloop-kafka", "drift-detected", settings.topics.drift, where.kafka_url,
                         where.consumer_group)
    dependency = Dependency(
        "drift-detected", source,
        data=(DataFilter("body.type", "string", (r"^ctloop\.drift\.detected$",)), _HAS_ID,
              *_model_named("body.data.model"),
              DataFilter("body.data.dataset_drift", "bool", ("true",)),
              DataFilter("body.data.data_uri", "string", ANY,
                         reason="drift event for {body.data.model} carries no data_uri: "
                                "set retrain_uri in the model's spec")),
        # A verdict on an empty window is noise, not drift.
        exprs=(ExprFilter("rows > 0", (("rows", "body.data.rows"),)),),
    )
    key = _key(Path("body.data.model"), "body.data.digest", Path("body.id"), code_version)
    return SensorSpec("ctloop-drift", dependency,
                      _params(Path("body.data.model"), Path("body.data.data_uri"), Path("body.id"), "drift", key))


def quality_sensor(settings: Settings, code_version: Versions, where: ClusterEndpoints) -> SensorSpec:
    """Live quality below the spec's rule (`ctloop.quality.degraded`): a retrain on the labelled recent data, held
    off by the same cooldown as a drift-triggered run."""
    source = KafkaSource("ctloop-kafka", "quality-degraded", settings.topics.quality, where.kafka_url,
                         where.consumer_group)
    dependency = Dependency(
        "quality-degraded", source,
        data=(DataFilter("body.type", "string", (r"^ctloop\.quality\.degraded$",)), _HAS_ID,
              *_model_named("body.data.model"),
              DataFilter("body.data.data_uri", "string", ANY,
                         reason="quality event for {body.data.model} carries no data_uri: "
                                "set retrain_uri in the model's spec")),
        exprs=(ExprFilter("rows > 0", (("rows", "body.data.rows"),)),),
    )
    key = _key(Path("body.data.model"), "body.data.digest", Path("body.id"), code_version)
    return SensorSpec("ctloop-quality", dependency,
                      _params(Path("body.data.model"), Path("body.data.data_uri"), Path("body.id"), "quality", key))


def minio_sensor(code_version: Versions, where: ClusterEndpoints) -> SensorSpec:
    source = MinioSource(
        "ctloop-minio", "data-object", where.minio_endpoint, where.minio_bucket, where.minio_prefix,
        where.minio_suffix, SecretRef(where.minio_secret, "accesskey"), SecretRef(where.minio_secret, "secretkey"),
    )
    obj = "notification.0.s3.object"
    # The key names the model as <prefix>/<model>/<file>; bucket and etag make the event's id.
    model_segment = f"^[^/]*/{MODEL_NAME_START.removeprefix('^')}[A-Za-z0-9_.-]*/"
    dependency = Dependency(
        "data-object", source,
        data=(DataFilter("notification.0.eventName", "string", ("^s3:ObjectCreated:",)),
              DataFilter(f"{obj}.key", "string", (model_segment,),
                         reason=f"object key {{{obj}.key}} does not name a model as <prefix>/<model>/<file> "
                                f"(model names are {MODEL_NAME_RULE})"),
              DataFilter("notification.0.s3.bucket.name", "string", ANY),
              DataFilter(f"{obj}.eTag", "string", ANY)),
    )
    # Objects land as incoming/<model>/<file>; the etag names the content, so it is the digest.
    model = Segment(Path(f"{obj}.key"), 1)
    event_id = Concat((Path("notification.0.s3.bucket.name"), Const("/"), Path(f"{obj}.key"), Const("@"),
                       Path(f"{obj}.eTag")))
    uri = Concat((Const("s3://"), Path("notification.0.s3.bucket.name"), Const("/"), Path(f"{obj}.key")))
    key = _key(model, f"{obj}.eTag", event_id, code_version)
    return SensorSpec("ctloop-minio", dependency, _params(model, uri, event_id, "data", key))


def manual_sensor(code_version: Versions, where: ClusterEndpoints) -> SensorSpec:
    source = WebhookSource("ctloop-webhook", "manual", where.webhook_port, "/retrain",
                           SecretRef(where.webhook_secret, "token"))
    dependency = Dependency(
        "manual", source, data=(*_model_named("body.model"), DataFilter("body.uri", "string", ANY)),
    )
    key = _key(Path("body.model"), "body.digest", Path("body.uri"), code_version)
    return SensorSpec("ctloop-manual", dependency,
                      _params(Path("body.model"), Path("body.uri"), Context("id"), "manual", key))


def cluster_sensors(settings: Settings, code_version: Versions,
                    where: ClusterEndpoints = ClusterEndpoints()) -> tuple[SensorSpec, ...]:
    return (data_arrived_sensor(settings, code_version, where), drift_sensor(settings, code_version, where),
            quality_sensor(settings, code_version, where), minio_sensor(code_version, where),
            manual_sensor(code_version, where))


def kafka_sensors(settings: Settings, code_version: Versions,
                  where: ClusterEndpoints = ClusterEndpoints()) -> tuple[SensorSpec, ...]:
    """The sensors whose events come from the bus, which `LocalSensor` interprets."""
    return tuple(s for s in cluster_sensors(settings, code_version, where) if isinstance(s.dependency.source,
                                                                                          KafkaSource))


def schedule_slug(model: str) -> str:
    """The model's name as a DNS label short enough for `ctloop-schedule-<slug>`."""
    return _NOT_DNS.sub("-", model.lower()).strip("-")[:63 - len(SCHEDULE_PREFIX)].rstrip("-") or "model"


def schedule_sensor(model: ModelSpec, code_version: Versions) -> SensorSpec:
    """A model's schedule as a calendar event and the sensor that maps each tick to the retrain workflow.

    A tick carries no digest: locally the sensor snapshots `metadata.uri` and writes the digest into the
    event data before the mapping reads it; in the cluster the key falls back to the tick's time."""
    schedule = model.schedule
    if schedule is None or model.schedule_uri is None:
        raise SpecError(f"model {model.name} has no schedule")
    slug = schedule_slug(model.name)
    metadata = (("model", model.name), ("uri", model.schedule_uri), ("gpu", str(schedule.gpu).lower()))
    source = CalendarSource(CALENDAR_SOURCE, slug, metadata, schedule=schedule.cron or "",
                            timezone=schedule.timezone if schedule.cron else "", interval=schedule.interval or "")
    key = _key(Path("metadata.model"), "digest", Path("eventTime"), code_version)
    return SensorSpec(f"{SCHEDULE_PREFIX}{slug}", Dependency("schedule", source),
                      _params(Path("metadata.model"), Path("metadata.uri"), Context("id"), "schedule", key))


def schedule_sensors(models: Iterable[ModelSpec], code_version: Versions) -> tuple[SensorSpec, ...]:
    """One calendar sensor per model with a schedule; two models whose names slug alike are an error."""
    specs: dict[str, tuple[str, SensorSpec]] = {}
    for model in models:
        if model.schedule is None:
            continue
        spec = schedule_sensor(model, code_version)
        if spec.name in specs:
            raise SpecError(f"models {specs[spec.name][0]!r} and {model.name!r} both render as sensor {spec.name}")
        specs[spec.name] = (model.name, spec)
    return tuple(spec for _, spec in specs.values())


def local_sensors(settings: Settings, code_version: str,
                  where: ClusterEndpoints = ClusterEndpoints()) -> tuple[SensorSpec, ...]:
    """What `LocalSensor` runs: the bus sensors, and a calendar sensor per scheduled spec in `<home>/specs`.
    A run's key names `code_version` and, for a spec with a trainer of its own, that trainer's code as it is
    on disk when the key is made (`ctloop.sensors.versions.LiveVersions`)."""
    models = load_specs(specs_dir(settings))
    versions = local_versions(models, code_version)
    return (*kafka_sensors(settings, versions, where), *schedule_sensors(models, versions))

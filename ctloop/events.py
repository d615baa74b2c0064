"""Event contracts: CloudEvents 1.0 in structured JSON mode, with typed payloads.

Parsing returns a typed `Event` or raises `EventError`, whose `reason` names what is wrong;
nothing else escapes, so a consumer can dead-letter any bad message and go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
import orjson
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import SchemaValidator, core_schema

SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "urn:ctloop"
DEFAULT_MAX_BYTES = 1_048_576


class Payload(BaseModel):
    """Base of every event body: strict about unknown fields so typos surface."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]


class DataArrived(Payload):
    """New data for a model: a URI that a snapshot resolves (an object or a prefix)."""

    event_type: ClassVar[str] = "ctloop.data.arrived"
    model: str = Field(min_length=1, max_length=200)
    uri: str = Field(min_length=1, max_length=4096)
    digest: str | None = None
    size: int | None = Field(default=None, ge=0)
    gpu: bool = False


class ColumnDrift(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    stattest: str
    score: float
    threshold: float
    drifted: bool


class DriftDetected(Payload):
    event_type: ClassVar[str] = "ctloop.drift.detected"
    model: str = Field(min_length=1)
    version: str | None = None
    window_start: datetime
    window_end: datetime
    rows: int = Field(ge=0)
    bad_rows: dict[str, int] = Field(default_factory=dict)
    drifted_share: float = Field(ge=0.0, le=1.0)
    dataset_drift: bool
    columns: dict[str, ColumnDrift]
    report_uri: str | None = None
    data_uri: str | None = None  # labelled data a drift-triggered run retrains on
    rows_uri: str | None = None  # the drifted window's own (unlabelled) rows, as evidence


class ModelPromoted(Payload):
    event_type: ClassVar[str] = "ctloop.model.promoted"
    model: str
    version: str
    previous_version: str | None = None
    actor: str
    reason: str
    manual: bool = False


class ModelRolledBack(Payload):
    event_type: ClassVar[str] = "ctloop.model.rolled_back"
    model: str
    from_version: str
    to_version: str
    actor: str
    reason: str


class RunFinished(Payload):
    event_type: ClassVar[str] = "ctloop.run.finished"
    run_id: str
    model: str
    status: Literal["Succeeded", "Failed", "Error", "Skipped"]
    idempotency_key: str | None = None
    trigger_event_id: str | None = None
    version: str | None = None
    promoted: bool | None = None
    error: str | None = None


LabelValue = StrictBool | StrictInt | StrictFloat | StrictStr


class LabelObserved(Payload):
    """Ground truth for one served prediction, known some time after serving (`ctloop.labels` topic).

    It names the prediction by the id serving returned to the client (`prediction_id`), or by the model and
    the entity's key (the value of the spec's `data.key` column in the served row): then it is the newest
    prediction of that entity served before `observed_at` within the joiner's horizon."""

    event_type: ClassVar[str] = "ctloop.label.observed"
    prediction_id: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    key: str | None = Field(default=None, min_length=1, max_length=1000)
    label: LabelValue
    observed_at: datetime

    @model_validator(mode="after")
    def _names_a_prediction(self) -> LabelObserved:
        if self.prediction_id is None and (self.model is None or self.key is None):
            raise ValueError("a label names its prediction: set prediction_id, or both model and key")
        if self.observed_at.tzinfo is None:
            raise ValueError("observed_at needs a time zone (RFC 3339 with an offset, e.g. ...Z)")
        if isinstance(self.label, float) and not math.isfinite(self.label):
            raise ValueError("label must be a finite number")
        return self


class LabelsObserved(Payload):
    """Many labels in one event, as a prediction batch carries many rows (`ctloop.labels` topic).

    What a labelling pipeline that learns outcomes in bulk publishes. Each item has the fields of a
    `ctloop.label.observed` payload; the i-th label's id is `<event id>#<i>`. The event is taken or
    dead-lettered whole."""

    event_type: ClassVar[str] = "ctloop.labels.observed"
    labels: list[LabelObserved] = Field(min_length=1, max_length=10_000)


class QualityDegraded(Payload):
    """A model version's live quality broke its spec's `quality` rule over a window of labelled rows."""

    event_type: ClassVar[str] = "ctloop.quality.degraded"
    model: str = Field(min_length=1)
    version: str
    metric: str
    value: float
    threshold: float
    holdout: float | None = None  # the version's holdout figure, for a `max_drop` rule
    rule: Literal["min", "max", "max_drop"]
    rows: int = Field(ge=0)
    window_start: datetime
    window_end: datetime
    data_uri: str | None = None  # labelled recent data (the spec's `retrain_uri`) a triggered run retrains on


PAYLOADS: dict[str, type[Payload]] = {
    cls.event_type: cls for cls in (DataArrived, DriftDetected, ModelPromoted, ModelRolledBack, RunFinished,
                                    LabelObserved, LabelsObserved, QualityDegraded)
}


_FORMAT = JSONFormat()
_encode_json = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256


class EventError(ValueError):
    """A message that is not a valid ctloop event; `reason` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Event(BaseModel):
    """One CloudEvent with a typed payload. A redelivered event keeps its `id`."""

    model_config = ConfigDict(frozen=True)
    id: str
    type: str
    source: str = DEFAULT_SOURCE
    time: datetime
    subject: str | None = None
    data: Payload

    @property
    def model(self) -> str | None:
        return getattr(self.data, "model", None)


def new_event(data: Payload, *, source: str = DEFAULT_SOURCE, id: str | None = None,
              subject: str | None = None, time: datetime | None = None) -> Event:
    return Event(
        id=id or str(uuid.uuid4()),
        type=data.event_type,
        source=source,
        time=time or datetime.now(UTC),
        subject=subject if subject is not None else getattr(data, "model", None),
        data=data,
    )


def to_bytes(event: Event) -> bytes:
    """Structured-mode JSON, as produced by the cloudevents SDK."""
    attributes: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time,
        "specversion": SPEC_VERSION,
        "datacontenttype": "application/json",
    }
    if event.subject is not None:
        attributes["subject"] = event.subject
    return _FORMAT.write(CloudEvent(attributes, event.data.model_dump(mode="json")))


def payload_json(data: Payload) -> bytes:
    """The payload's JSON exactly as `model_dump_json()` writes it (what content digests are taken over)."""
    if type(data) is DataArrived:
        # Validation leaves its fields exactly str, int, bool or None, which msgspec writes byte for byte as
        # pydantic does (tests/ctloop/test_events_fast.py tries every character), in a quarter of the time.
        return _encode_json(data.__dict__)
    return data.__pydantic_serializer__.to_json(data)


def parse(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse one structured CloudEvent into a typed `Event`, or raise `EventError`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(f"oversized: {len(raw)} bytes exceeds the limit of {max_bytes}")
    plain = _parse_plain(raw, document=False)
    return plain[0] if plain is not None else _parse_general(raw)[0]


def parse_document(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Event, dict[str, Any]]:
    """`parse`, also returning the JSON document the event was read from, so that a consumer that needs
    the raw fields too (a sensor's filters) parses each message once."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(f"oversized: {len(raw)} bytes exceeds the limit of {max_bytes}")
    return _parse_plain(raw) or _parse_general(raw)


def content_digest(event: Event) -> str:
    """What a redelivery repeats exactly: type and payload (not `time`, which a re-emit may renew). The first 32
    hex digits of the sha256 of the type, a newline and the payload's `payload_json`; digests are stored, so
    these bytes never change."""
    return _content_digest(event.type.encode() + b"\n", payload_json(event.data))


def _content_digest(prefix: bytes, payload: bytes) -> str:
    """`content_digest` of a payload's bytes, `prefix` its event type and a newline."""
    return _sha256(prefix + payload).hexdigest()[:32]


class Brief(msgspec.Struct, frozen=True, gc=False):
    """What a sensor reads of one event, without building the `Event`: its attributes, its `time` in seconds
    since the epoch (now, for an event without one), its payload's `model` and `gpu` (None and False for a type
    without them), its `content_digest`, and the JSON document it was read from."""

    id: str
    type: str
    source: str
    subject: str | None
    time: float
    model: str | None
    gpu: bool
    digest: str
    document: dict[str, Any]


def parse_brief(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Brief:
    """`parse_document` and `content_digest` of one message, as a `Brief`; the same `EventError` for a message
    `parse_document` refuses."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise EventError(f"oversized: {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        doc = _orjson_loads(raw)
    except orjson.JSONDecodeError:
        return _brief_of(*_parse_general(raw))
    if type(doc) is dict:
        kind = doc.get("type")
        if type(kind) is str:
            if (flat := _FLAT.get(kind)) is not None:
                brief = _brief_flat(doc, kind, *flat)
                if brief is not None:
                    return brief
            elif kind in _STRUCT_TYPES:
                brief = _brief_hot(raw, doc)
                if brief is not None:
                    return brief
    return _brief_of(*_parse_general(raw, doc if _orjson_reads_as_json(raw) else None))


def _brief_of(event: Event, doc: dict[str, Any]) -> Brief:
    data = event.data
    # Not getattr with a default: a pydantic model raises (and formats) an AttributeError for a missing field.
    return Brief(event.id, event.type, event.source, event.subject, event.time.timestamp(), data.__dict__.get("model"),
                 type(data) is DataArrived and data.gpu, content_digest(event), doc)


def _parse_general(raw: bytes, doc: Any = None) -> tuple[Event, dict[str, Any]]:
    """`parse_document` of any message within the size limit: every check, and the words for what fails. `doc`,
    where given, is what `_loads` reads of `raw` (already read by the caller)."""
    if doc is None:
        try:
            doc = _loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise EventError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventError(f"not a CloudEvent: expected a JSON object, got {type(doc).__name__}")
    for field in ("specversion", "id", "type", "source"):
        value = doc.get(field)
        if value is None:
            raise EventError(f"missing field: {field}")
        if not isinstance(value, str) or not value:
            raise EventError(f"wrong type: {field} must be a non-empty string")
    if doc["specversion"] != SPEC_VERSION:
        raise EventError(f"unsupported specversion {doc['specversion']!r}, expected {SPEC_VERSION!r}")
    payload_cls = PAYLOADS.get(doc["type"])
    if payload_cls is None:
        raise EventError(f"unknown type: {doc['type']!r} (known: {', '.join(sorted(PAYLOADS))})")
    if "data" not in doc:
        raise EventError("missing field: data")
    attributes = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
    try:
        if "time" in attributes:
            if not isinstance(attributes["time"], str):
                raise EventError("wrong type: time must be an RFC 3339 string")
            attributes["time"] = datetime.fromisoformat(attributes["time"])
        if not _plainly_valid(attributes):
            CloudEvent(attributes, doc["data"])  # the SDK's checks, and its words for what fails them
    except EventError:
        raise
    except (BaseCloudEventException, TypeError, ValueError) as exc:
        raise EventError(f"invalid CloudEvent: {exc}") from None
    try:
        data = payload_cls.model_validate(doc["data"])
        subject = attributes.get("subject")
        event = Event(
            id=attributes["id"],
            type=attributes["type"],
            source=attributes["source"],
            time=attributes.get("time") or datetime.now(UTC),
            subject=subject if isinstance(subject, str) else None,
            data=data,
        )
    except ValidationError as exc:
        raise EventError(f"invalid {doc['type']}: {_describe(exc)}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventError(f"invalid {doc['type']}: {exc}") from None
    return event, doc


# orjson reads a document ~6x faster than json, and the same value, except where it refuses what json takes
# (NaN, a BOM, UTF-16, lone surrogates) or would read it differently: integers past 64 bits (as floats) and
# nesting deeper than Python's recursion limit. Those go to json, so both paths accept and reject alike.
_DIGITS = bytes(b"0"[0] if 48 <= b <= 57 else b" "[0] for b in range(256))
_LONG_NUMBER = b"0" * 19
_DEEP = 400
_PLAIN_ATTRIBUTES = frozenset({"id", "source", "type", "specversion", "datacontenttype", "dataschema", "subject",
                               "time"})


def _orjson_reads_as_json(raw: bytes) -> bool:
    """Whether orjson reads `raw`, if it reads it at all, as json does."""
    return raw.count(b"[") + raw.count(b"{") < _DEEP and _LONG_NUMBER not in raw.translate(_DIGITS)


def _loads(raw: bytes) -> Any:
    if _orjson_reads_as_json(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def _plainly_valid(attributes: dict[str, Any]) -> bool:
    """Whether the CloudEvents SDK certainly accepts these attributes (required ones checked by the caller):
    no extension attributes, optional ones non-empty strings, an aware time. Anything else gets the SDK's
    own validation."""
    if not _PLAIN_ATTRIBUTES.issuperset(attributes):
        return False
    for name in ("subject", "datacontenttype", "dataschema"):
        value = attributes.get(name, "present")
        if not isinstance(value, str) or not value:
            return False
    time = attributes.get("time")
    return time is None or time.tzinfo is not None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "data"
        kind = "missing field" if err["type"] == "missing" else "wrong type" if "type" in err["type"] else "invalid"
        parts.append(f"{kind} {where}: {err['msg']}")
    return "; ".join(parts)


# --- The fast path --------------------------------------------------------------------------------------------
# A sensor parses every message of a backlog, and nearly all are plainly valid events of three types; the outcomes
# joiner parses every label event, up to 10,000 labels each. For those,
# one msgspec decode of the bytes into strict structs (below) certifies what the general path would find: every
# CloudEvent attribute a non-empty string and nothing else, specversion 1.0, a payload of the right shape with
# JSON types pydantic takes unchanged. The structs accept a subset of what the general path accepts, never more
# (pydantic is lax: "5" is an int there, not here); a message they refuse, or that any later step doubts, takes
# the general path, so each error's reason is the general path's. Certified, the document orjson reads is the one
# json would read (no NaN, BOM or lone surrogate, which both decoders refuse; no integer past 64 bits, which the
# bounds below refuse; bounded depth), and the payload is built from the structs without validating it again
# (its timestamps by pydantic's own datetime validator). A label event's payload is built from the structs alone
# (a field left out is UNSET there), so `parse`, which returns no document, does not read one: msgspec refuses
# what orjson refuses, and a repeated "type" key with another value.
# tests/ctloop/test_events_fast.py and tests/sensors/test_fast_parse.py hold both paths equal.

_Text = Annotated[str, msgspec.Meta(min_length=1)]
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
# A float field may hold an integer token; past 64 bits orjson would read it as a float and json as an int.
_Float = Annotated[float, msgspec.Meta(ge=-(2.0**63), le=2.0**63)]


class _Struct(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    pass


class _WireArrived(_Struct, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    uri: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    digest: str | None = None
    size: _Count | None = None
    gpu: bool = False


class _WireColumn(_Struct):
    stattest: str
    score: _Float
    threshold: _Float
    drifted: bool


class _WireDrift(_Struct, kw_only=True):
    model: _Text
    version: str | None = None
    window_start: str
    window_end: str
    rows: _Count
    bad_rows: dict[str, _Int] = {}
    drifted_share: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    dataset_drift: bool
    columns: dict[str, _WireColumn]
    report_uri: str | None = None
    data_uri: str | None = None
    rows_uri: str | None = None


class _WireQuality(_Struct, kw_only=True):
    model: _Text
    version: str
    metric: str
    value: _Float
    threshold: _Float
    holdout: _Float | None = None
    rule: Literal["min", "max", "max_drop"]
    rows: _Count
    window_start: str
    window_end: str
    data_uri: str | None = None


_Unset = msgspec.UnsetType
_UNSET = msgspec.UNSET


class _WireLabel(_Struct, kw_only=True):
    # UNSET, not None, for a field the JSON leaves out: the payload's fields set comes from the struct alone.
    prediction_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | _Unset | None = _UNSET
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | _Unset | None = _UNSET
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | _Unset | None = _UNSET
    label: bool | _Int | float | str  # a float token stays a float, as pydantic's strict union keeps it
    observed_at: str


class _WireLabels(_Struct):
    labels: Annotated[list[_WireLabel], msgspec.Meta(min_length=1, max_length=10_000)]


class _WireEvent(_Struct, tag_field="type", kw_only=True):
    """The CloudEvent attributes `_plainly_valid` takes, each a non-empty string when present."""

    specversion: Literal["1.0"]
    id: _Text
    source: _Text
    time: str | msgspec.UnsetType = msgspec.UNSET
    subject: _Text | msgspec.UnsetType = msgspec.UNSET
    datacontenttype: _Text | msgspec.UnsetType = msgspec.UNSET
    dataschema: _Text | msgspec.UnsetType = msgspec.UNSET


class _WireArrivedEvent(_WireEvent, tag=DataArrived.event_type, kw_only=True):
    data: _WireArrived


class _WireDriftEvent(_WireEvent, tag=DriftDetected.event_type, kw_only=True):
    data: _WireDrift


class _WireQualityEvent(_WireEvent, tag=QualityDegraded.event_type, kw_only=True):
    data: _WireQuality


class _WireLabelEvent(_WireEvent, tag=LabelObserved.event_type, kw_only=True):
    data: _WireLabel


class _WireLabelsEvent(_WireEvent, tag=LabelsObserved.event_type, kw_only=True):
    data: _WireLabels


_WIRE = msgspec.json.Decoder(_WireArrivedEvent | _WireDriftEvent | _WireQualityEvent | _WireLabelEvent
                             | _WireLabelsEvent)
_as_dict = msgspec.structs.asdict
# A timestamp in a payload, read by the validator pydantic builds for a `datetime` field (its own TzInfo).
_datetime = SchemaValidator(core_schema.datetime_schema()).validate_python
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_M = TypeVar("_M", bound=BaseModel)


class _Doubtful(Exception):
    """A payload the structs took that its model's own validator might refuse: the general path decides."""


def _parse_plain(raw: bytes, *, document: bool = True) -> tuple[Event, dict[str, Any] | None] | None:
    """`_parse_general`'s result for a plainly valid event of a hot type, or None for the general path. Without
    `document`, a label event's document is not read (None in its place): its payload needs only the structs."""
    try:
        wire = _WIRE.decode(raw)
        doc = orjson.loads(raw) if document or type(wire) not in _STRUCTS_ALONE else None
    except (msgspec.DecodeError, orjson.JSONDecodeError):
        return None
    # A repeated "type" key: msgspec refuses one whose values differ; should it ever read one and json the
    # other, this sees it where there is a document.
    if doc is not None and doc["type"] != _BUILDERS[type(wire)][0].event_type:
        return None
    return _plain_event(wire, doc)


def _plain_event(wire: _WireEvent, doc: dict[str, Any] | None) -> tuple[Event, dict[str, Any] | None] | None:
    """The event of structs that certify a message (and of its document), or None for the general path."""
    payload_cls, build = _BUILDERS[type(wire)]
    event_type = payload_cls.event_type
    if wire.time is msgspec.UNSET:
        time = datetime.now(UTC)
    elif (time := _aware_time(wire.time)) is None:
        return None
    try:
        payload = build(wire.data, doc["data"] if doc is not None else None)
    except (ValidationError, _Doubtful):  # a timestamp pydantic does not read, or a model validator's case
        return None
    subject = None if wire.subject is msgspec.UNSET else wire.subject
    event = _built(Event, {"id": wire.id, "type": event_type, "source": wire.source, "time": time,
                           "subject": subject, "data": payload}, {"id", "type", "source", "time", "subject", "data"})
    return event, doc


def _arrived(wire: _WireArrived, data: dict[str, Any]) -> DataArrived:
    values = {"model": wire.model, "uri": wire.uri, "digest": wire.digest, "size": wire.size, "gpu": wire.gpu}
    return _built(DataArrived, values, set(data))


def _drift(wire: _WireDrift, data: dict[str, Any]) -> DriftDetected:
    values = _as_dict(wire)
    values["window_start"] = _datetime(wire.window_start)
    values["window_end"] = _datetime(wire.window_end)
    columns = data["columns"]
    values["columns"] = {name: _built(ColumnDrift, _as_dict(column), set(columns[name]))
                         for name, column in wire.columns.items()}
    return _built(DriftDetected, values, set(data))


def _quality(wire: _WireQuality, data: dict[str, Any]) -> QualityDegraded:
    values = _as_dict(wire)
    values["window_start"] = _datetime(wire.window_start)
    values["window_end"] = _datetime(wire.window_end)
    return _built(QualityDegraded, values, set(data))


def _label(wire: _WireLabel, _data: Any = None, times: dict[str, datetime] | None = None) -> LabelObserved:
    """`LabelObserved`'s validator's checks; whatever it would refuse is left to it, for its words. `times`
    holds the timestamps already read in this event (a batch's labels often share one; datetimes are immutable)."""
    prediction_id, model, key, label = wire.prediction_id, wire.model, wire.key, wire.label
    fields = {"label", "observed_at"}
    if prediction_id is _UNSET:
        prediction_id = None
    else:
        fields.add("prediction_id")
    if model is _UNSET:
        model = None
    else:
        fields.add("model")
    if key is _UNSET:
        key = None
    else:
        fields.add("key")
    if prediction_id is None and (model is None or key is None):
        raise _Doubtful
    if type(label) is float and not math.isfinite(label):  # msgspec refuses 1e400, but keep the check local
        raise _Doubtful
    observed_at = times.get(wire.observed_at) if times is not None else None
    if observed_at is None:
        observed_at = _datetime(wire.observed_at)
        if observed_at.tzinfo is None:
            raise _Doubtful
        if times is not None:
            times[wire.observed_at] = observed_at
    values = {"prediction_id": prediction_id, "model": model, "key": key, "label": label, "observed_at": observed_at}
    return _built(LabelObserved, values, fields)


def _labels(wire: _WireLabels, _data: Any = None) -> LabelsObserved:
    times: dict[str, datetime] = {}
    return _built(LabelsObserved, {"labels": [_label(label, None, times) for label in wire.labels]}, {"labels"})


_BUILDERS: dict[type[_WireEvent], tuple[type[Payload], Callable[[Any, dict[str, Any]], Payload]]] = {
    _WireArrivedEvent: (DataArrived, _arrived), _WireDriftEvent: (DriftDetected, _drift),
    _WireQualityEvent: (QualityDegraded, _quality), _WireLabelEvent: (LabelObserved, _label),
    _WireLabelsEvent: (LabelsObserved, _labels)}
_STRUCTS_ALONE = frozenset({_WireLabelEvent, _WireLabelsEvent})


def _built(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """A model of values already valid, as its validator would leave it. `model_construct` does the same ~10x
    slower (it looks up aliases and defaults per field); the slots are set through their descriptors, since
    attribute lookups on a model class go through pydantic's metaclass."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, fields_set)
    _set_extra(model, None)
    _set_private(model, None)
    return model


ObservedLabel = tuple[str, LabelValue, datetime, str | None, str | None, str | None]
"""(label id, label, observed_at, prediction_id, model, key) of one label: what `read_labels` gives."""


def _aware_time(text: str) -> datetime | None:
    """An event's `time` as the general path reads it, or None where that path would refuse it (not RFC 3339,
    or without a zone), so the message goes there for its words."""
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        return None
    return time if time.tzinfo is not None else None


def read_labels(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[ObservedLabel] | None:
    """The labels of a plainly valid label event (`ctloop.label.observed`: its id names its label;
    `ctloop.labels.observed`: the i-th label is `<event id>#<i>`), for a reader that needs their fields and not an
    `Event` (the outcomes joiner); None for any other message, which `parse` takes or gives the reason for. What
    it returns is what `parse` returns for the same message, field by field, without building the models."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        return None
    try:
        wire = _WIRE.decode(raw)
    except msgspec.DecodeError:
        return None
    kind = type(wire)
    if kind is not _WireLabelsEvent and kind is not _WireLabelEvent:
        return None
    if wire.time is not _UNSET and _aware_time(wire.time) is None:
        return None
    times: dict[str, datetime] = {}
    try:
        if kind is _WireLabelEvent:
            return [_observed(wire.id, wire.data, times)]
        prefix = wire.id + "#"
        return [_observed(f"{prefix}{i}", label, times) for i, label in enumerate(wire.data.labels)]
    except (ValidationError, _Doubtful):
        return None


def _observed(label_id: str, wire: _WireLabel, times: dict[str, datetime]) -> ObservedLabel:
    """`_label`'s checks (what it would leave to the general path raises `_Doubtful`), as a tuple."""
    prediction_id, model, key, label = wire.prediction_id, wire.model, wire.key, wire.label
    if prediction_id is _UNSET:
        prediction_id = None
    if model is _UNSET:
        model = None
    if key is _UNSET:
        key = None
    if prediction_id is None and (model is None or key is None):
        raise _Doubtful
    if type(label) is float and not math.isfinite(label):
        raise _Doubtful
    observed_at = times.get(wire.observed_at)
    if observed_at is None:
        observed_at = _datetime(wire.observed_at)
        if observed_at.tzinfo is None:
            raise _Doubtful
        times[wire.observed_at] = observed_at
    return label_id, label, observed_at, prediction_id, model, key


# --- The sensor's brief ----------------------------------------------------------------------------------------
# A plainly valid event of a flat payload type (an arrival, a promotion, a rollback, a finished run) is briefed from
# its document, read once (by orjson): a struct certifies the document itself (`msgspec.convert`, strict, so each
# value is exactly what pydantic would leave: a str, an int within 64 bits, a bool or None; orjson reads such a
# document as json does), and its content digest is the sha256 of the bytes msgspec writes for the payload struct
# (its fields in the model's order), as `payload_json` writes them. A drift or quality verdict the structs certify
# is briefed from the structs: msgspec writes its payload as pydantic does (the same strings, integers and
# datetimes; a float the same unless its exponent is positive, which pydantic writes "e+16" and msgspec "e16": such
# a payload is briefed from its `Event`). Any other message is briefed from its `Event`.
# tests/ctloop/test_events_brief.py and tests/sensors/test_fast_parse.py hold every brief equal to
# `parse_document` + `content_digest`.


class _WirePromoted(_Struct, kw_only=True):
    model: str
    version: str
    previous_version: str | None = None
    actor: str
    reason: str
    manual: bool = False


class _WireRolledBack(_Struct, kw_only=True):
    model: str
    from_version: str
    to_version: str
    actor: str
    reason: str


class _WireRunFinished(_Struct, kw_only=True):
    run_id: str
    model: str
    status: Literal["Succeeded", "Failed", "Error", "Skipped"]
    idempotency_key: str | None = None
    trigger_event_id: str | None = None
    version: str | None = None
    promoted: bool | None = None
    error: str | None = None


class _WirePromotedEvent(_WireEvent, tag=ModelPromoted.event_type, kw_only=True):
    data: _WirePromoted


class _WireRolledBackEvent(_WireEvent, tag=ModelRolledBack.event_type, kw_only=True):
    data: _WireRolledBack


class _WireRunFinishedEvent(_WireEvent, tag=RunFinished.event_type, kw_only=True):
    data: _WireRunFinished


# The types whose payloads hold only strings, bools, integers and None: each struct declares its model's fields in
# the model's order, with its defaults, so that msgspec writes the payload as `model_dump_json` does.
_FLAT_TYPES: dict[type[_WireEvent], type[Payload]] = {
    _WireArrivedEvent: DataArrived, _WirePromotedEvent: ModelPromoted, _WireRolledBackEvent: ModelRolledBack,
    _WireRunFinishedEvent: RunFinished}
# event type -> its struct, the content digest's prefix, whether the payload has `gpu`
_FLAT = {payload.event_type: (cls, payload.event_type.encode() + b"\n", "gpu" in payload.model_fields)
         for cls, payload in _FLAT_TYPES.items()}
_STRUCT_TYPES = frozenset({DriftDetected.event_type, QualityDegraded.event_type, LabelObserved.event_type,
                           LabelsObserved.event_type})
_WINDOWED = {_WireDriftEvent: DriftDetected.event_type.encode() + b"\n",
             _WireQualityEvent: QualityDegraded.event_type.encode() + b"\n"}
_PLAIN_FLOAT = 1e16  # below it, in magnitude, msgspec and pydantic write a float alike
_orjson_loads = orjson.loads
_replace = msgspec.structs.replace
_convert = msgspec.convert


def _epoch(text: str | msgspec.UnsetType) -> float | None:
    """An event's `time` (UNSET for none) in seconds since the epoch, as the general path reads it, or None where
    that path would refuse it or ask the SDK."""
    if text is _UNSET:
        return datetime.now(UTC).timestamp()
    moment = _aware_time(text)
    return None if moment is None else moment.timestamp()


def _brief_flat(doc: dict[str, Any], event_type: str, wire_cls: type[_WireEvent], prefix: bytes,
                has_gpu: bool) -> Brief | None:
    """The brief of a plainly valid event of a flat payload type (its document certified by `wire_cls`), or None
    for the general path."""
    try:
        wire = _convert(doc, wire_cls)
    except msgspec.ValidationError:
        return None
    time = _epoch(wire.time)
    if time is None:
        return None
    data = wire.data
    subject = wire.subject
    return Brief(wire.id, event_type, wire.source, None if subject is _UNSET else subject, time, data.model,
                 has_gpu and data.gpu, _content_digest(prefix, _encode_json(data)), doc)


def _brief_hot(raw: bytes, doc: dict[str, Any]) -> Brief | None:
    """The brief of a plainly valid drift, quality or label event, or None for the general path."""
    try:
        wire = _WIRE.decode(raw)
    except msgspec.DecodeError:
        return None
    kind = type(wire)
    if doc["type"] != _BUILDERS[kind][0].event_type:  # a repeated "type" key read two ways
        return None
    prefix = _WINDOWED.get(kind)
    if prefix is None or not _plain_floats(wire.data):
        plain = _plain_event(wire, doc)
        return None if plain is None else _brief_of(plain[0], doc)
    time = _epoch(wire.time)
    if time is None:
        return None
    data = wire.data
    try:  # pydantic's own datetime validator, for the values (and their time zones) it would hold
        payload = _replace(data, window_start=_datetime(data.window_start), window_end=_datetime(data.window_end))
    except ValidationError:
        return None
    subject = wire.subject
    return Brief(wire.id, _BUILDERS[kind][0].event_type, wire.source, None if subject is _UNSET else subject, time,
                 data.model, False, _content_digest(prefix, _encode_json(payload)), doc)


def _plain_floats(data: Any) -> bool:
    """Whether every float of a drift or quality payload is one msgspec writes as pydantic does."""
    if type(data) is _WireDrift:
        return all(abs(column.score) < _PLAIN_FLOAT and abs(column.threshold) < _PLAIN_FLOAT
                   for column in data.columns.values())
    return (abs(data.value) < _PLAIN_FLOAT and abs(data.threshold) < _PLAIN_FLOAT
            and (data.holdout is None or abs(data.holdout) < _PLAIN_FLOAT))

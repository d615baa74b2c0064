"""The admission request: what an Argo Events Sensor's Kafka trigger puts on the admission topic.

Its payload is the sensor's trigger parameters (`ctloop.sensors.mapping.parameters`, the very values the
Workflow trigger used to fill in) plus `gpu`, one JSON object of strings keyed by parameter name, with the
model as the message key. `admission_payload` computes locally what the rendered trigger's `payload`
computes in Argo Events; `candidate` reads it back on the gateway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.bus import Message
from ctloop.sensors.admission import Candidate, unknown_trigger
from ctloop.sensors.eventdata import PathMissing, go_empty, go_text, lookup
from ctloop.sensors.mapping import parameters
from ctloop.sensors.spec import KafkaSource, SensorSpec

GPU = "gpu"
# Where a ctloop event on Kafka says it wants a GPU (`ctloop.events.DataArrived.gpu`); other sources never do.
GPU_PATH = "body.data.gpu"
REQUIRED = ("model", "data-uri", "event-id", "trigger", "idempotency-key")


class RequestInvalid(ValueError):
    """An admission message the gateway cannot decide on; the message says why (it is dead-lettered)."""


def gpu_path(spec: SensorSpec) -> str | None:
    """The event-data path of the GPU flag for this sensor's events; None where its source has none."""
    return GPU_PATH if isinstance(spec.dependency.source, KafkaSource) else None


def gpu_value(spec: SensorSpec, data: Any) -> str:
    """`true`/`false` as the rendered `{{ default false <path> }}` prints it."""
    path = gpu_path(spec)
    if path is None:
        return "false"
    try:
        value = lookup(data, path)
    except PathMissing:
        return "false"
    return "false" if go_empty(value) else go_text(value)


def admission_payload(spec: SensorSpec, data: Any, context: Mapping[str, str]) -> dict[str, str]:
    """The admission message's payload for one event the sensor's filters passed (MappingError otherwise)."""
    return {**parameters(spec, data, context), GPU: gpu_value(spec, data)}


@dataclass(frozen=True)
class Request:
    """An admission request read: the candidate run, and the digest of its payload, which a redelivery
    repeats exactly and a producer reusing the event id with another body does not."""

    candidate: Candidate
    digest: str


def candidate(message: Message) -> Candidate:
    """The candidate run an admission message asks for; `RequestInvalid` naming what is wrong."""
    return read_request(message).candidate


def read_request(message: Message) -> Request:
    """The admission message read; `RequestInvalid` naming what is wrong."""
    try:
        payload = json.loads(message.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestInvalid(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestInvalid("an admission request is a JSON object of trigger parameters")
    missing = [name for name in REQUIRED if not isinstance(payload.get(name), str) or not payload[name]]
    if missing:
        raise RequestInvalid(f"admission request lacks {', '.join(missing)}")
    if (unknown := unknown_trigger(payload["trigger"])) is not None:
        raise RequestInvalid(unknown)
    key = message.key.decode("utf-8", errors="replace") if message.key is not None else None
    if key is not None and key != payload["model"]:
        raise RequestInvalid(f"message key {key!r} is not the request's model {payload['model']!r}")
    gpu = str(payload.get(GPU, "false")).lower()
    if gpu not in ("true", "false"):
        raise RequestInvalid(f"gpu {payload.get(GPU)!r} is not true or false")
    event_time = message.timestamp_ms / 1000 if message.timestamp_ms else 0.0
    c = Candidate(event_id=payload["event-id"], model=payload["model"], key=payload["idempotency-key"],
                  uri=payload["data-uri"], digest=str(payload.get("data-digest", "")), trigger=payload["trigger"],
                  gpu=gpu == "true", event_time=event_time)
    # Key order and spacing are the producer's; the parameters are what a redelivery repeats.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return Request(candidate=c, digest=hashlib.sha256(canonical).hexdigest()[:32])

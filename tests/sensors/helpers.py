"""Events and a sensor factory shared by the sensor tests."""

from __future__ import annotations

from datetime import UTC, datetime

from ctloop.bus import Bus
from ctloop.events import DataArrived, DriftDetected, new_event, to_bytes
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.assembly import local_sensor
from ctloop.sensors.local.sensor import LocalSensor
from ctloop.settings import Settings
from ctloop.workflows.engine import Engine


def arrival(model: str, digest: str | None, event_id: str, uri: str | None = None, gpu: bool = False) -> bytes:
    payload = DataArrived(model=model, uri=uri or f"file:///data/{model}/{digest}", digest=digest, gpu=gpu)
    return to_bytes(new_event(payload, id=event_id))


def drift(model: str, event_id: str, *, dataset_drift: bool = True, rows: int = 100,
          data_uri: str | None = "file:///data/live") -> bytes:
    now = datetime.now(UTC)
    payload = DriftDetected(model=model, window_start=now, window_end=now, rows=rows, drifted_share=0.5,
                            dataset_drift=dataset_drift, columns={}, data_uri=data_uri)
    return to_bytes(new_event(payload, id=event_id))


def make_sensor(settings: Settings, bus: Bus, engine: Engine, *, snapshot_digests: bool = False,
                **kwargs: object) -> LocalSensor:
    """The sensor as `ctloop sensor run` assembles it; no coalescing and, unless asked, no snapshotting."""
    kwargs.setdefault("policy", AdmissionPolicy(window_s=0))
    return local_sensor(settings, bus, engine, snapshot_digests=snapshot_digests, **kwargs)  # type: ignore[arg-type]


def drain(sensor: LocalSensor, *, idle_polls: int = 2, timeout_s: float = 0.05) -> None:
    """Step until `idle_polls` consecutive polls return nothing."""
    idle = 0
    while idle < idle_polls:
        idle = idle + 1 if sensor.step(timeout_s) == 0 else 0

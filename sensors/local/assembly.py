"""The local sensor as ctloop runs it: the catalog's bus-sourced sensors over a bus, starting runs on an engine.

`ctloop sensor run`, the demo and the tests assemble it here, so its wiring is written once.
"""

from __future__ import annotations

from typing import Any

from ctloop.bus import Bus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import local_sensors
from ctloop.sensors.local.metrics import SensorMetrics
from ctloop.sensors.local.sensor import LocalSensor, snapshot_digest
from ctloop.settings import Settings
from ctloop.version import code_version
from ctloop.workflows.engine import Engine

DEFAULT_GROUP = "ctloop-sensor"


def local_sensor(
    settings: Settings,
    bus: Bus,
    engine: Engine,
    *,
    group: str = DEFAULT_GROUP,
    policy: AdmissionPolicy | None = None,
    metrics: SensorMetrics | None = None,
    snapshot_digests: bool = True,
    **tuning: Any,
) -> LocalSensor:
    """The catalog's data-arrived and drift sensors and the specs' schedules (`local_sensors`), consuming
    `bus` as consumer group `group` (also the name of its decision log) and submitting admitted runs to
    `engine`. An event without a data digest gets one by snapshotting its data unless `snapshot_digests` is
    off. `tuning` goes to `LocalSensor` (batch size, intervals, clock). The caller owns `bus` and `engine`;
    `close()` the sensor (or `run_until_signalled`)."""
    return LocalSensor(settings, bus, engine, local_sensors(settings, code_version()), group=group, policy=policy,
                       resolve_digest=snapshot_digest(settings) if snapshot_digests else None, metrics=metrics,
                       **tuning)

"""The two admission paths the guarantee tests drive with one body: `LocalSensor` on one machine, and the
cluster's path (Argo Events' filters and Kafka trigger → admission topic → gateway replicas)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from kafka import KafkaAdminClient
from kafka.admin import OffsetSpec
from kafka.errors import NoError

from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway import gateway
from ctloop.settings import Settings
from tests.sensors.gateway.argo_events import ArgoEventsStandIn
from tests.sensors.helpers import make_sensor


class LocalPath:
    def __init__(self, settings: Settings, bus, engine, policy: AdmissionPolicy) -> None:
        self.settings = settings
        # A group per test: a member a previous test left behind must not stall this one's rebalance.
        self.group = f"sensor-{settings.topics.data}"
        self.sensor = make_sensor(settings, bus, engine, policy=policy, status_interval_s=0.05, group=self.group)
        self._closed = False

    def step(self) -> None:
        self.sensor.step(0.02)

    def decisions(self) -> list[tuple[str, str, str]]:
        """(event id, kind, reason) of every decision, oldest first."""
        from ctloop.sensors.local.decisions import list_decisions

        rows = list_decisions(self.settings.state_db, limit=1_000_000)
        return [(d.event_id, d.kind, d.reason) for d in reversed(rows)]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sensor.close()


class ClusterPath:
    """Argo Events' stand-in, stepped by the test, and `replicas` gateways in one consumer group, each in a
    thread of its own (a group rebalances only while every member polls)."""

    def __init__(self, settings: Settings, bus, engine, policy: AdmissionPolicy, replicas: int = 2) -> None:
        self.settings = settings
        bus.ensure_topics([settings.topics.admission], partitions=4)
        self.argo_events = ArgoEventsStandIn(settings, bus, group=f"argo-events-{settings.topics.admission}")
        self.group = f"gateway-{settings.topics.admission}"
        self.gateways = [gateway(settings, bus, engine, policy=policy, replica=f"r{i}", status_interval_s=0.05,
                                 group=self.group) for i in range(replicas)]
        self._closed = False
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=g.run, args=(self._stop.is_set, 0.02), daemon=True)
                         for g in self.gateways]
        for thread in self._threads:
            thread.start()

    def step(self) -> None:
        if self.argo_events.step(0.02) == 0:
            time.sleep(0.02)

    def decisions(self) -> list[tuple[str, str, str]]:
        return [(d.event_id, d.kind, d.reason) for d in self.gateways[0].store.decisions()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.argo_events.close()
        for g in self.gateways:
            g.close()


def drive(path, until: Callable[[], bool], timeout_s: float = 60.0, then_s: float = 1.0) -> None:
    """Step until `until()` holds, then `then_s` more (so that anything that would start too many runs does)."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"timed out; runs: {runs(path.settings)}"
        path.step()
    settle = time.monotonic() + then_s
    while time.monotonic() < settle:
        path.step()


def redeliver(settings: Settings, group: str) -> None:
    """Rewind `group` (no member running) to the start of everything it consumed, as a consumer that lost its
    commits in a crash sees it: every message comes again, at its own offset."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        consumed = admin.list_group_offsets({group: None})[group]
        assert consumed, f"group {group} committed nothing"
        reset = admin.reset_group_offsets(group, {tp: OffsetSpec.EARLIEST for tp in consumed})
        assert all(r["error"] is NoError and r["offset"] == 0 for r in reset.values()), reset
    finally:
        admin.close()


def caught_up(settings: Settings, group: str) -> bool:
    """`group` has committed everything on the partitions it consumes."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        committed = admin.list_group_offsets({group: None})[group]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in committed})
    finally:
        admin.close()
    return all(committed[tp].offset >= ends[tp].offset for tp in committed)


def runs(settings: Settings) -> list[dict]:
    """The local engine's runs: model, data URI, key, when created and finished, status."""
    from ctloop.sqlite import connect

    db = connect(settings.state_db)
    try:
        rows = db.execute("SELECT model, parameters, idempotency_key, created_at, finished_at, status"
                          " FROM wf_runs ORDER BY created_at").fetchall()
    finally:
        db.close()
    return [{"model": m, "data_uri": json.loads(p)["data-uri"], "key": k, "start": c, "end": f, "status": s}
            for m, p, k, c, f, s in rows]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most

"""Prometheus metrics of a sensor, on their own registry so that several sensors can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SensorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("ctloop_sensor_events", "Messages consumed", registry=r)
        self.filtered = Counter("ctloop_sensor_filtered", "Events no sensor's filters admitted", registry=r)
        self.decisions = Counter("ctloop_sensor_decisions", "Admission decisions by kind", ["kind"], registry=r)
        self.dead_lettered = Counter("ctloop_sensor_dead_lettered", "Messages sent to the dead-letter topic",
                                     registry=r)
        self.redelivered = Counter("ctloop_sensor_redelivered", "Events already decided, seen again", registry=r)
        self.submit_errors = Counter("ctloop_sensor_submit_errors", "Engine submissions that failed, retried",
                                     registry=r)
        self.latency = Histogram("ctloop_sensor_trigger_latency_seconds", "Event time to run submitted",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.by_kind = {kind: self.decisions.labels(kind)
                        for kind in ("triggered", "deduped", "coalesced", "deferred", "rejected")}

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on `port` (0 picks a free one); returns the bound port."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, for tests and the CLI's summary."""
        found = self.registry.get_sample_value(name, labels or None)
        return float(found or 0.0)

"""Prometheus metrics of a sensor, on their own registry so that several sensors can live in one process."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import groupby

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BatchHistogram(Histogram):
    """A prometheus `Histogram` that can also observe a batch of amounts at once: one increment of the sum and
    one per bucket the batch reaches, rather than a lock and a scan of the bounds per amount. The exposition is
    a plain histogram's (the sum may differ from one-at-a-time adding in its last bits)."""

    def observe_all(self, amounts: Sequence[float]) -> None:
        """`observe` each amount (without exemplars)."""
        self._raise_if_not_observable()
        if not amounts:
            return
        bounds, buckets = self._upper_bounds, self._buckets
        self._sum.inc(sum(amounts))
        # `observe`'s bucket is the first bound the amount is at or under; a NaN is under none and counts in none.
        reached = sorted(bisect_left(bounds, amount) for amount in amounts if amount == amount)
        for at, same in groupby(reached):
            buckets[at].inc(sum(1 for _ in same))


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
        self.latency = BatchHistogram("ctloop_sensor_trigger_latency_seconds", "Event time to run submitted",
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

"""Sensor metrics are served over HTTP in the Prometheus text format."""

from __future__ import annotations

import urllib.request

import pytest

from ctloop.sensors.local.metrics import SensorMetrics


def test_metrics_are_served_on_a_port():
    metrics = SensorMetrics()
    metrics.events_in.inc(3)
    metrics.decisions.labels("triggered").inc()
    metrics.latency.observe(0.004)
    port = metrics.serve(0)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "ctloop_sensor_events_total 3.0" in body
    assert 'ctloop_sensor_decisions_total{kind="triggered"} 1.0' in body
    assert 'ctloop_sensor_trigger_latency_seconds_bucket{le="0.005"} 1.0' in body


def test_a_batch_of_latencies_is_observed_as_each_one_would_be():
    amounts = [0.0, 0.001, 0.0011, 0.004, 0.004, 0.3, 7.0, 61.0, 1e9, 0.0025]
    one_by_one, batched = SensorMetrics(), SensorMetrics()
    for amount in amounts:
        one_by_one.latency.observe(amount)
    batched.latency.observe_all(amounts[:4])
    batched.latency.observe_all(amounts[4:])
    batched.latency.observe_all([])

    def samples(metrics: SensorMetrics) -> list[tuple[str, dict[str, str], float]]:
        (family,) = [m for m in metrics.registry.collect() if m.name == "ctloop_sensor_trigger_latency_seconds"]
        return [(s.name, s.labels, s.value) for s in family.samples if not s.name.endswith("_created")]

    expected, got = samples(one_by_one), samples(batched)
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    for (name, _, want), (_, _, value) in zip(expected, got, strict=True):
        # The counts are exact; the sum of a batch is added at once, so only its last bits may differ.
        assert value == pytest.approx(want, rel=1e-12), name
    assert batched.value("ctloop_sensor_trigger_latency_seconds_count") == 10
    batched.latency.observe_all([float("nan")])  # in no bucket, as `observe` counts it
    assert batched.value("ctloop_sensor_trigger_latency_seconds_count") == 10

"""Sensor metrics are served over HTTP in the Prometheus text format."""

from __future__ import annotations

import urllib.request

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

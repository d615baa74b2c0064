"""Broker restart mid-stream: the running sensor's consumer and producer recover by themselves."""

from __future__ import annotations

import random

import pytest

from tests.reliability.chaos import chaos_settings, run_through_broker_restart, workload

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]


def test_a_broker_restart_mid_stream_loses_nothing_and_needs_no_sensor_restart(tmp_path, local_kafka):
    settings = chaos_settings(tmp_path / "home", local_kafka.bootstrap)
    work = workload(random.Random(2), events=200, models=4)
    report = run_through_broker_restart(settings, work, restart_broker=local_kafka.restart)
    print(report.table())
    assert report.problems == ()
    assert report.broker_restarts == 1
    assert report.decided_events == report.distinct_events
    assert report.lost == 0 and report.duplicates == 0 and report.unfinished_runs == 0
    assert report.dead_lettered == report.garbage_sent

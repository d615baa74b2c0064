"""Crash anywhere: the sensor and its engine SIGKILLed ten times while arrivals flow in on the real broker."""

from __future__ import annotations

import random

import pytest

from tests.reliability.chaos import chaos_settings, run_chaos, workload

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]


def test_ten_sigkills_lose_nothing_train_nothing_twice_and_leave_no_run_unfinished(tmp_path, kafka_bootstrap):
    settings = chaos_settings(tmp_path / "home", kafka_bootstrap)
    work = workload(random.Random(20261128), events=500, models=5)
    report = run_chaos(settings, work, kills=10, rng=random.Random(5))
    print(report.table())
    assert report.problems == ()
    assert report.kills == 10, "every SIGKILL must hit a running sensor, not one that had already exited"
    assert report.decided_events == report.distinct_events
    assert report.duplicates == 0 and report.lost == 0 and report.unfinished_runs == 0
    # Every dead-letter message counted, none de-duplicated: each bad message exactly once.
    assert report.dead_lettered == report.dead_letter_origins == report.garbage_sent > 0
    assert report.trained_keys >= 5, "each model trains at least its newest data"

"""Broker restart mid-stream: the running sensor's consumer and producer recover by themselves.

Counted from outside the engine too: every execution of the train step appends its key to a ledger file,
so a second training of the same data shows whatever the run store and the memo cache recorded."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ctloop.version import code_version
from ctloop.workflows.engine import idempotency_key
from tests.reliability.chaos import chaos_settings, run_through_broker_restart, workload
from tests.reliability.cheap_steps import LEDGER_ENV

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]


def test_a_broker_restart_mid_stream_loses_nothing_and_needs_no_sensor_restart(tmp_path, local_kafka, monkeypatch):
    ledger = tmp_path / "trained.log"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    settings = chaos_settings(tmp_path / "home", local_kafka.bootstrap)
    work = workload(random.Random(2), events=200, models=4)
    report = run_through_broker_restart(settings, work, restart_broker=local_kafka.restart)
    print(report.table())
    assert report.problems == ()
    assert report.decided_events == report.distinct_events
    assert report.lost == 0 and report.unfinished_runs == 0
    assert report.dead_lettered == report.garbage_sent

    trained = Counter(ledger.read_text().split())
    assert [k for k, n in trained.items() if n > 1] == [], "no data trained twice, counted by the step itself"
    assert len(trained) == report.trained_keys, "the run store records exactly the trainings that ran"
    # A redelivery repeats an event already decided, so only first deliveries make a model's newest data.
    seen: set[str] = set()
    newest = {}
    for a in work.arrivals:
        if a.event_id not in seen:
            seen.add(a.event_id)
            newest[a.model] = a
    assert {idempotency_key(a.model, a.digest, code_version()) for a in newest.values()} <= set(trained), \
        "each model's newest data trained"

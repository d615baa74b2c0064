"""LocalSensor on the real Kafka broker: exact runs under duplicates and bursts, crash safety, dead letters."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ctloop.deadletter import reason_of
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.decisions import list_decisions
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from ctloop.workflows.engine import idempotency_key
from tests.sensors.helpers import arrival, make_sensor
from tests.sensors.ledger import LedgerEngine

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path, kafka_bootstrap):
    tag = uuid.uuid4().hex[:10]
    topics = Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}")
    return Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics)


def consume(sensor, count: int, deadline_s: float = 60.0) -> None:
    """Step until the sensor consumed `count` messages."""
    deadline = time.monotonic() + deadline_s
    seen = 0
    while seen < count:
        assert time.monotonic() < deadline, f"consumed {seen} of {count}"
        seen += sensor.step(0.2)


def workload(rng: random.Random, phases: int, per_phase: int, models: int):
    """Phases of bursty arrivals; a tenth of each phase repeats an earlier event or an earlier key."""
    published: list[tuple[str, str, str]] = []
    plan = []
    counter = 0
    for _ in range(phases):
        phase = []
        for i in range(per_phase):
            if published and i % 10 == 9:
                model, digest, event_id = rng.choice(published)
                if rng.random() < 0.5:
                    event_id = f"again-{counter}"
                counter += 1
            else:
                counter += 1
                model, digest, event_id = f"m{rng.randrange(models)}", f"d{counter}", f"e{counter}"
            phase.append((model, digest, event_id))
            published.append((model, digest, event_id))
        plan.append(phase)
    return plan


def expected_runs(plan) -> list[set[tuple[str, str]]]:
    """Per phase: for each model, the last arrival whose key has not run and whose event is new."""
    ran: set[tuple[str, str]] = set()
    seen_ids: set[str] = set()
    out = []
    for phase in plan:
        newest: dict[str, str] = {}
        for model, digest, event_id in phase:
            if event_id in seen_ids:
                continue
            seen_ids.add(event_id)
            if (model, digest) not in ran:
                newest[model] = digest
        runs = {(m, d) for m, d in newest.items()}
        ran |= runs
        out.append(runs)
    return out


def test_a_thousand_arrivals_with_duplicates_and_bursts_start_exactly_the_expected_runs(
        settings, kafka_bus, tmp_path):
    plan = workload(random.Random(7), phases=10, per_phase=100, models=6)
    assert sum(len(p) for p in plan) == 1000
    engine = LedgerEngine(tmp_path / "runs.db")
    clock = [1_000.0]
    sensor = make_sensor(settings, kafka_bus, engine, policy=AdmissionPolicy(window_s=60), clock=lambda: clock[0])
    expected = expected_runs(plan)
    for phase, want in zip(plan, expected, strict=True):
        before = {r["run_id"] for r in engine.runs()}
        for model, digest, event_id in phase:
            kafka_bus.publish(settings.topics.data, arrival(model, digest, event_id), key=model)
        kafka_bus.flush()
        consume(sensor, len(phase))
        assert {r["run_id"] for r in engine.runs()} == before, "no run may start while the window is open"
        clock[0] += 61
        sensor.advance()
        new = [r for r in engine.runs() if r["run_id"] not in before]
        assert {(r["model"], r["digest"]) for r in new} == want
        assert all(r["key"] == idempotency_key(r["model"], r["digest"], code_version()) for r in new)
    total = sum(len(w) for w in expected)
    assert len(engine.runs()) == total and engine.duplicate_runs() == {}
    assert len(engine.attempts()) == total, "without crashes no key is ever submitted twice"
    assert sensor.metrics.value("ctloop_sensor_decisions_total", kind="triggered") == total
    assert sensor.metrics.value("ctloop_sensor_decisions_total", kind="deduped") > 0
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") > 0
    sensor.close()
    engine.close()


def _decided(state_db: Path) -> int:
    if not state_db.exists():
        return 0
    db = sqlite3.connect(state_db, timeout=30)
    try:
        return int(db.execute("SELECT COUNT(*) FROM sensor_events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_a_sensor_killed_five_times_loses_nothing_and_runs_nothing_twice(settings, kafka_bus, tmp_path):
    rng = random.Random(11)
    events = []
    # One model per new key, so that no arrival waits behind another's run: every new key must run.
    for n in range(600):
        if n % 10 == 9:
            model, digest, _ = rng.choice(events)
            events.append((model, digest, f"dup-{n}"))
        else:
            events.append((f"m{n}", f"d{n}", f"e{n}"))
    for model, digest, event_id in events:
        kafka_bus.publish(settings.topics.data, arrival(model, digest, event_id), key=model)
    kafka_bus.flush()
    ledger = tmp_path / "runs.db"
    env = {**os.environ, "CTLOOP_HOME": str(settings.home), "CTLOOP_BUS": "kafka",
           "CTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CTLOOP_TOPICS__DATA": settings.topics.data,
           "CTLOOP_TOPICS__DRIFT": settings.topics.drift, "CTLOOP_TOPICS__DEADLETTER": settings.topics.deadletter,
           "CTLOOP_CODE_VERSION": code_version()}
    command = [sys.executable, "-m", "tests.sensors.sensor_process", str(ledger), "10"]
    kills = 0
    while kills < 5:
        # Kill at a random point of progress, so that every kill lands while consuming.
        target = _decided(settings.state_db) + rng.randint(1, 60)
        proc = subprocess.Popen(command, cwd=REPO, env=env)
        try:
            deadline = time.monotonic() + 60
            while _decided(settings.state_db) < target:
                assert time.monotonic() < deadline, "the sensor made no progress"
                assert proc.poll() is None, "the sensor exited"
                time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills += 1
    assert _decided(settings.state_db) < len(events), "every kill should land while consuming"
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while _decided(settings.state_db) < len(events):
            assert time.monotonic() < deadline, "the restarted sensor did not finish"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    engine = LedgerEngine(ledger)
    unique_keys = {idempotency_key(m, d, code_version()) for m, d, _ in events}
    assert {r["key"] for r in engine.runs()} == unique_keys, "0 lost"
    assert engine.duplicate_runs() == {}, "0 duplicate runs"
    # Counted from the submissions themselves, which nothing de-duplicates: a key is submitted again only
    # by the process that replaced a killed one (it redoes the batch the kill left unrecorded), and that
    # second submission is refused. A sensor that resubmitted decided keys in normal operation would fail here.
    attempts = engine.attempts()
    first: dict[str, dict] = {}
    again = []
    for attempt in attempts:
        if attempt["key"] in first:
            again.append(attempt)
        else:
            first[attempt["key"]] = attempt
    assert all(first[k]["accepted"] for k in unique_keys)
    assert all(not a["accepted"] and a["pid"] != first[a["key"]]["pid"] for a in again), again
    assert len({(a["key"], a["pid"]) for a in attempts}) == len(attempts), "no process submits a key twice"
    assert len(again) <= 5 * 10, "at most one batch (10) redone per kill"
    decisions = list_decisions(settings.state_db, limit=10_000)
    per_event: dict[str, int] = {}
    for d in decisions:
        per_event[d.event_id] = per_event.get(d.event_id, 0) + 1
    assert set(per_event) == {e for _, _, e in events}
    assert set(per_event.values()) == {1}, "each event is decided exactly once"
    engine.close()


def test_malformed_messages_go_to_the_dead_letter_topic_and_consumption_continues(settings, kafka_bus, tmp_path):
    engine = LedgerEngine(tmp_path / "runs.db")
    topic = settings.topics.data
    kafka_bus.publish(topic, b"\xff\xfe garbage")
    kafka_bus.publish(topic, arrival("churn", "a", "ok-1"))
    kafka_bus.publish(topic, b'{"specversion": "1.0", "id": "x", "type": "ctloop.nope", "source": "t", "data": {}}')
    kafka_bus.publish(topic, arrival("churn", "b", "ok-2"))
    kafka_bus.flush()
    sensor = make_sensor(settings, kafka_bus, engine)
    consume(sensor, 4)
    assert sorted(r["event_id"] for r in engine.runs()) == ["ok-1", "ok-2"]
    reader = kafka_bus.consumer([settings.topics.deadletter], f"check-{uuid.uuid4().hex[:6]}")
    dead = []
    deadline = time.monotonic() + 30
    while len(dead) < 2 and time.monotonic() < deadline:
        dead += reader.poll(timeout_s=0.5)
    reader.close()
    reasons = sorted(reason_of(m) for m in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("not JSON") and reasons[1].startswith("unknown type")
    sensor.close()
    engine.close()

"""A real sensor process SIGKILLed at each of its named crash points on the real broker, restarted, and audited
from the outside: the ledger's every submission, the decision log, and every message in the dead-letter topic."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ctloop.crashpoints import ENV
from ctloop.deadletter import origin_of
from ctloop.sensors.local.decisions import list_decisions
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from ctloop.workflows.engine import idempotency_key
from tests.sensors.helpers import arrival
from tests.sensors.ledger import LedgerEngine

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]
BATCH = 10
GARBAGE = (b"\xff not json", b"{}")

# The point, and the pass to crash on: late enough that work was done before, early enough that work remains.
POINTS = [("decision-recorded", 3), ("offset-committed", 2), ("dead-letter-published", 2)]


def _events() -> list[tuple[str, str, str] | bytes]:
    """120 arrivals (a tenth repeat an earlier digest under a new id, some are redelivered) and garbage
    spread through the first batches, so that every point is reached early."""
    out: list[tuple[str, str, str] | bytes] = []
    for n in range(120):
        if n % 7 == 3 and n < 60:
            out.append(GARBAGE[n % 2])
        if n % 10 == 9:
            model, digest, _ = out[-2] if isinstance(out[-2], tuple) else out[-3]  # type: ignore[misc]
            out.append((model, digest, f"again-{n}"))
        else:
            out.append((f"m{n}", f"d{n}", f"e{n}"))
        if n % 15 == 14:
            out.append(out[-1])  # a redelivery: same id, same body
    return out


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


@pytest.mark.parametrize(("point", "nth"), POINTS)
def test_a_sensor_crashed_at_a_named_point_loses_nothing_and_duplicates_nothing(
        point, nth, tmp_path, kafka_bootstrap, kafka_bus):
    tag = uuid.uuid4().hex[:10]
    settings = Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap,
                        topics=Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}"))
    events = _events()
    for item in events:
        if isinstance(item, bytes):
            kafka_bus.publish(settings.topics.data, item)
        else:
            kafka_bus.publish(settings.topics.data, arrival(*item), key=item[0])
    kafka_bus.flush()
    arrivals = [e for e in events if isinstance(e, tuple)]
    ledger = tmp_path / "runs.db"
    env = {**os.environ, "CTLOOP_HOME": str(settings.home), "CTLOOP_BUS": "kafka",
           "CTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CTLOOP_TOPICS__DATA": settings.topics.data,
           "CTLOOP_TOPICS__DRIFT": settings.topics.drift, "CTLOOP_TOPICS__DEADLETTER": settings.topics.deadletter,
           "CTLOOP_CODE_VERSION": code_version()}
    env.pop(ENV, None)
    command = [sys.executable, "-m", "tests.sensors.sensor_process", str(ledger), str(BATCH)]

    crashed = subprocess.run(command, cwd=REPO, env={**env, ENV: f"{point}@{nth}"}, timeout=120,
                             capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, f"never reached {point}: {crashed.stderr[-2000:]}"
    distinct = {e for _, _, e in arrivals}
    assert 0 < _decided(settings.state_db) < len(distinct) or point == "dead-letter-published", \
        "the crash must land with work done and work left"

    proc = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while _decided(settings.state_db) < len(distinct):
            assert time.monotonic() < deadline, "the restarted sensor did not finish"
            assert proc.poll() is None, "the restarted sensor exited"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    # The ledger: every key ran, once; a key was submitted again only by the restarted process.
    engine = LedgerEngine(ledger)
    try:
        keys = {idempotency_key(m, d, code_version()) for m, d, _ in arrivals}
        assert {r["key"] for r in engine.runs()} == keys, "0 lost"
        assert engine.duplicate_runs() == {}, "0 duplicate runs"
        first: dict[str, dict] = {}
        for attempt in engine.attempts():
            if attempt["key"] not in first:
                first[attempt["key"]] = attempt
            else:
                assert not attempt["accepted"] and attempt["pid"] != first[attempt["key"]]["pid"], attempt
        assert sum(1 for _ in engine.attempts()) - len(keys) <= BATCH, "at most the crashed batch is redone"
    finally:
        engine.close()
    # The decision log: each event decided exactly once.
    per_event = Counter(d.event_id for d in list_decisions(settings.state_db, limit=10_000))
    assert set(per_event) == distinct and set(per_event.values()) == {1}
    # The bus: every dead-letter message, none de-duplicated: each garbage message exactly once.
    dead = Counter(origin_of(m) for m in kafka_bus.read_all(settings.topics.deadletter))
    garbage = {(m.topic, m.partition, m.offset) for m in kafka_bus.read_all(settings.topics.data)
               if m.value in GARBAGE}
    assert dead == dict.fromkeys(garbage, 1)

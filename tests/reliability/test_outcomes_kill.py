"""`ctloop outcomes run` (its own process) SIGKILLed at random points, 10 times over, on the real Kafka broker,
while predictions and labels keep arriving, some labels before their predictions and some delivered twice:
in the end every label is in the store, each joined exactly once, as one unkilled joiner would have it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctloop.events import LabelObserved, new_event, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.monitors.live_quality import live_quality
from ctloop.monitors.outcomes import OutcomeStore, default_url
from ctloop.predictions import PredictionBatch

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]
CTLOOP = Path(sys.executable).with_name("ctloop")
ROUNDS = 10
PER_ROUND = 6000
BATCH = 100
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _publish_round(bus: KafkaBus, topics: dict[str, str], n: int, rng: random.Random,
                   expected: dict[str, int], held: list[tuple[str, int]]) -> None:
    """`PER_ROUND` served rows; a tenth of their labels go out before them, most right after, a fifth a round
    later; and a tenth of all earlier labels again, with the same event ids."""
    ids = [f"p{n}-{i}" for i in range(PER_ROUND)]
    labels = [(pid, rng.randint(0, 1), rng.random()) for pid in ids]
    for pid, y in held:
        bus.publish(topics["labels"], _label(pid, y))
    held.clear()
    for pid, y, when in labels:
        if when < 0.1:
            bus.publish(topics["labels"], _label(pid, y))
    for b in range(0, PER_ROUND, BATCH):
        chunk = ids[b:b + BATCH]
        batch = PredictionBatch(model="churn", version=str(1 + n % 2), rows=[{"x": float(len(pid))} for pid in chunk],
                                predictions=[{"0": 0.4, "1": 0.6}] * len(chunk), ids=chunk,
                                ts=T0 + timedelta(seconds=n))
        bus.publish(topics["predictions"], batch.to_bytes(), key="churn")
    for pid, y, when in labels:
        expected[pid] = y
        if when >= 0.3:
            bus.publish(topics["labels"], _label(pid, y))
        elif when >= 0.1:
            held.append((pid, y))
    for pid in rng.sample(sorted(expected), k=len(expected) // 10):
        bus.publish(topics["labels"], _label(pid, expected[pid]))
    bus.flush()


def _label(pid: str, y: int) -> bytes:
    return to_bytes(new_event(LabelObserved(prediction_id=pid, label=y, observed_at=T0 + timedelta(minutes=5)),
                              id=f"label-{pid}"))


def _stored(home: Path) -> tuple[int, int]:
    """(served rows, labels) in the store so far."""
    if not (home / "outcomes.db").exists():
        return (0, 0)
    store = OutcomeStore(default_url(home))
    try:
        return store.counts().predictions, len(store.label_states())
    finally:
        store.close()


def _joiner(env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([str(CTLOOP), "outcomes", "run", "--bus", "kafka", "--horizon", "24h",
                             "--evaluate-every", "1", "--duration", "300"],
                            env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("joining"), f"the joiner said {line!r}"
    return proc


def test_a_joiner_killed_at_random_points_loses_no_label_and_counts_none_twice(tmp_path, kafka_bootstrap):
    rng = random.Random(16)
    tag = uuid.uuid4().hex[:10]
    topics = {"predictions": f"pred-{tag}", "labels": f"labels-{tag}", "deadletter": f"dead-{tag}"}
    env = {**os.environ, "CTLOOP_HOME": str(tmp_path), "CTLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
           **{f"CTLOOP_TOPICS__{k.upper()}": v for k, v in topics.items()}}
    bus = KafkaBus(kafka_bootstrap, client_id="outcomes-kill-test")
    expected: dict[str, int] = {}
    held: list[tuple[str, int]] = []
    killed_midway = 0
    for n in range(ROUNDS):
        _publish_round(bus, topics, n, rng, expected, held)
        proc = _joiner(env)
        # Once it has joined its group and stored something of this round, at a random point within the
        # next moments: mid-poll, mid-transaction, before or after an offset commit.
        before = _stored(tmp_path)
        deadline = time.monotonic() + 60
        while _stored(tmp_path) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Mid-work: served rows or labels published so far (all but those held for the next round) not all stored.
        rows, labels = _stored(tmp_path)
        killed_midway += rows < len(expected) or labels < len(expected) - len(held)
    assert killed_midway >= 3, "the kills should land while there is work in flight"
    for pid, y in held:
        bus.publish(topics["labels"], _label(pid, y))
    bus.flush()

    proc = _joiner(env)
    url = default_url(tmp_path)
    deadline = time.monotonic() + 180
    while True:
        store = OutcomeStore(url)
        counts = store.counts()
        store.close()
        if counts.joined >= len(expected):
            break
        assert proc.poll() is None, "the last joiner exited early"
        assert time.monotonic() < deadline, f"{counts} of {len(expected)} labels after 180 s"
        time.sleep(1)
    time.sleep(2)  # the redelivered tail of the topics, which must change nothing
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    store = OutcomeStore(url)
    states = store.label_states()
    assert set(states) == {f"label-{pid}" for pid in expected}  # none lost
    assert set(states.values()) == {"joined"}  # a redelivered label is the same label, not a second one
    rows = store.joined("churn", None, since=T0 - timedelta(days=1))
    assert len(rows) == len(expected) == ROUNDS * PER_ROUND  # none counted twice
    assert {r.prediction_id: r.label for r in rows} == expected
    assert live_quality(rows, ["accuracy"]).n == len(expected)
    counts = store.counts()
    assert (counts.predictions, counts.pending, counts.duplicate, counts.late) == (len(expected), 0, 0, 0)
    store.close()
    bus.close()

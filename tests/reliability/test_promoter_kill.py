"""A promoter SIGKILLed at random points, 10 times over, on a real `mlflow server`: every alias move
that committed (has its audit entry) is announced on the bus, with the event id derived from the
move, no uncommitted move is ever announced, and the aliases are those the last committed move left."""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from ctloop.deploy.lock import LOCK_PREFIX
from ctloop.deploy.outbox import OUTBOX_PREFIX
from ctloop.deploy.promotion import INTENT_TAG, settle
from ctloop.deploy.registry import Registry
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from tests.deploy.test_lock import spawn

pytestmark = [pytest.mark.reliability, pytest.mark.mlflow_server]
ROUNDS = 10


def test_a_promoter_killed_at_random_points_loses_no_promotion_event(mlflow_server, uri, tmp_path: Path):
    rng = random.Random(15)
    registry = Registry(mlflow_server)
    model = f"kill-{uuid.uuid4().hex[:8]}"
    v1, v2 = (registry.create_version(model, uri, run_id=None, tags={}).version for _ in range(2))
    bus_path = tmp_path / "bus.db"
    EmbeddedBus(bus_path).close()

    for _ in range(ROUNDS):
        promoter = spawn("promote", mlflow_server, model, str(bus_path), v1, v2, "3")
        time.sleep(rng.uniform(0.05, 2.5))
        promoter.send_signal(signal.SIGKILL)
        promoter.wait()

    # The restarted promoter: finishes (or undoes) what the last one left, then drains the outbox.
    bus = EmbeddedBus(bus_path)
    try:
        settle(registry, model, bus=bus)
        consumer = bus.consumer(["models"], "check")
        announced = [parse(m.value) for m in consumer.poll(0.5, max_records=100_000)]
        consumer.close()
    finally:
        bus.close()

    info = registry.model(model)
    moves = [e for e in info.audit if e["action"] == "promote"]
    assert len(moves) >= ROUNDS // 2, f"only {len(moves)} promotions committed in {ROUNDS} rounds"
    expected = {str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctloop.move/{model}/{e['id']}")): e for e in moves}
    by_id = {event.id: event for event in announced}
    assert set(by_id) == set(expected), (
        f"{len(set(expected) - set(by_id))} committed moves never announced,"
        f" {len(set(by_id) - set(expected))} announcements of moves that did not commit"
    )
    for event_id, entry in expected.items():
        assert (by_id[event_id].data.version, by_id[event_id].data.reason) == (entry["version"], entry["reason"])
    assert info.aliases.get("champion") == moves[-1]["version"]
    assert [k for k in info.tags if k.startswith((OUTBOX_PREFIX, LOCK_PREFIX)) or k == INTENT_TAG] == []

"""One gateway replica on the real broker: a malformed admission request is dead-lettered with its reason and
the replica goes on; a restarted replica picks up a reserved run and the model's queue from the store, and sends
the dead letter a killed replica recorded but never sent."""

from __future__ import annotations

import json
import uuid

import pytest

from ctloop.deadletter import origin_of, reason_of
from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway import GatewayStore, gateway
from ctloop.sensors.gateway.store import DeadLetterRows
from ctloop.settings import Settings, Topics
from tests.sensors.gateway.helpers import request, step_until
from tests.sensors.ledger import LedgerEngine

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(tmp_path, kafka_bootstrap):
    tag = uuid.uuid4().hex[:10]
    return Settings(home=tmp_path, kafka_bootstrap=kafka_bootstrap,
                    topics=Topics(admission=f"adm-{tag}", deadletter=f"dead-{tag}"))


def test_a_malformed_request_is_dead_lettered_with_its_reason_and_the_next_one_runs(settings, tmp_path):
    bus = KafkaBus(settings.kafka_bootstrap)
    engine = LedgerEngine(tmp_path / "ledger.db")
    bus.publish(settings.topics.admission, b"{not json", key="churn")
    bus.publish(settings.topics.admission, json.dumps({"model": "churn"}).encode(), key="churn")
    bus.publish(settings.topics.admission, request("churn", "d1", "e1"), key="churn")
    bus.flush()
    replica = gateway(settings, bus, engine, group=f"g-{settings.topics.admission}", replica="r0",
                      policy=AdmissionPolicy(window_s=0))
    step_until(replica, lambda: len(engine.runs()) == 1)
    dead = bus.read_all(settings.topics.deadletter)
    assert [reason_of(m).split(":")[0] for m in dead] == ["invalid admission request"] * 2
    assert "not JSON" in reason_of(dead[0]) and "lacks data-uri" in reason_of(dead[1])
    replica.close()
    engine.close()
    bus.close()


def test_a_restarted_replica_takes_up_the_models_running_slot_and_queue_from_the_store(settings, tmp_path):
    bus = KafkaBus(settings.kafka_bootstrap)
    engine = LedgerEngine(tmp_path / "ledger.db", instant=False)  # runs stay Running until completed
    group = f"g-{settings.topics.admission}"
    for n in range(3):
        bus.publish(settings.topics.admission, request("churn", f"d{n}", f"e{n}"), key="churn")
    bus.flush()
    first = gateway(settings, bus, engine, group=group, replica="r0", policy=AdmissionPolicy(window_s=0),
                    status_interval_s=0.05)
    step_until(first, lambda: len(first.store.decisions()) >= 4)  # e0 runs; e1 queued, then replaced by e2
    first.close()
    [run] = engine.runs()
    assert run["data_uri"].endswith("/d0")
    second = gateway(settings, bus, engine, group=group, replica="r1", policy=AdmissionPolicy(window_s=0),
                     status_interval_s=0.05)
    # Kafka moves the partition once the group has rebalanced, which on a loaded machine may take a while.
    step_until(second, lambda: bool(second.store.owned), timeout_s=150)
    for _ in range(10):
        second.step(0.05)
    assert len(engine.runs()) == 1, "the model's run is still running: nothing else may start"
    engine.complete(run["run_id"])
    step_until(second, lambda: len(engine.runs()) == 2)
    assert engine.runs()[1]["data_uri"].endswith("/d2")
    assert engine.duplicate_runs() == {}
    second.close()
    engine.close()
    bus.close()


def test_a_dead_letter_a_killed_replica_recorded_but_never_sent_is_sent_once_by_the_partitions_next_owner(
        settings, tmp_path):
    bus = KafkaBus(settings.kafka_bootstrap)
    bus.ensure_topics([settings.topics.admission], partitions=1)
    engine = LedgerEngine(tmp_path / "ledger.db")
    bus.publish(settings.topics.admission, b"{not json", key="churn")
    bus.publish(settings.topics.admission, request("churn", "d1", "e1"), key="churn")
    bus.flush()
    # What a replica SIGKILLed between recording the bad message's dead letter and publishing it leaves behind.
    killed = GatewayStore(settings.gateway_store, "killed")
    killed.claim([0])
    assert DeadLetterRows(killed, settings.topics.admission).claim((settings.topics.admission, 0, 0), "not JSON")
    killed.close()
    replica = gateway(settings, bus, engine, group=f"g-{settings.topics.admission}", replica="r0",
                      policy=AdmissionPolicy(window_s=0))
    step_until(replica, lambda: len(engine.runs()) == 1)
    for _ in range(5):
        replica.step(0.05)
    dead = bus.read_all(settings.topics.deadletter)
    assert [origin_of(m) for m in dead] == [(settings.topics.admission, 0, 0)]
    assert reason_of(dead[0]).startswith("invalid admission request: not JSON")
    assert DeadLetterRows(replica.store, settings.topics.admission).pending() == []
    replica.close()
    engine.close()
    bus.close()

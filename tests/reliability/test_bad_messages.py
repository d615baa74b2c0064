"""Bad messages on every topic a component consumes, on the real broker: each one dead-lettered with a
reason, and the consumer goes on with the next good message."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctloop.bus import Consumer
from ctloop.deadletter import reason_of
from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.service import MonitorService
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.assembly import local_sensor
from ctloop.settings import Settings, Topics
from ctloop.workflows.local.engine import LocalEngine
from tests.reliability.bad_messages import bad_events, bad_prediction_batches
from tests.reliability.cheap_template import cheap_retrain

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]
LIMIT = 16_384
EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def kafka_settings(tmp_path, kafka_bootstrap) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics(data=f"bad-data-{tag}", drift=f"bad-drift-{tag}", deadletter=f"bad-dead-{tag}",
                    predictions=f"bad-pred-{tag}", runs=f"bad-runs-{tag}")
    return Settings(home=tmp_path / "home", bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics,
                    max_event_bytes=LIMIT)


@pytest.fixture
def dead_letters(kafka_bus: KafkaBus, kafka_settings: Settings) -> Iterator[Consumer]:
    kafka_bus.ensure_topics([kafka_settings.topics.deadletter])
    consumer = kafka_bus.consumer([kafka_settings.topics.deadletter], f"dl-{uuid.uuid4().hex[:8]}")
    yield consumer
    consumer.close()


def read(consumer: Consumer, count: int, timeout_s: float = 30.0, meanwhile: Callable[[], object] = lambda: None
         ) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        meanwhile()
        out += consumer.poll(timeout_s=0.2)
    return out


def until(done: Callable[[], bool], step: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the consumer did not get to the good message after the bad ones"
        step()


def assert_dead_lettered(dead: list, sent: list[bytes]) -> None:
    assert sorted(m.value for m in dead) == sorted(sent), "every bad message, verbatim, and nothing else"
    assert all(reason_of(m) for m in dead), "each with a reason"


def test_the_sensor_dead_letters_every_bad_message_on_its_topics_and_keeps_deciding(
        kafka_settings, kafka_bus, dead_letters):
    engine = LocalEngine(kafka_settings, template=cheap_retrain(0.0))
    sensor = local_sensor(kafka_settings, kafka_bus, engine, policy=AdmissionPolicy(window_s=0))
    topics = [kafka_settings.topics.data, kafka_settings.topics.drift]

    @EXAMPLES
    @given(st.lists(st.tuples(st.sampled_from(topics), bad_events(LIMIT)), min_size=1, max_size=4))
    def check(bad: list[tuple[str, bytes]]) -> None:
        for topic, value in bad:
            kafka_bus.publish(topic, value)
        good = new_event(DataArrived(model="churn", uri="file:///data/churn", digest=uuid.uuid4().hex))
        kafka_bus.publish(kafka_settings.topics.data, to_bytes(good), key="churn")
        kafka_bus.flush()
        until(lambda: sensor.log.seen(good.id), lambda: sensor.step(0.2))
        # Kafka orders messages within a partition only: the good one seen on the data topic does not mean
        # that a bad one on the drift topic was polled already, so the sensor goes on while its dead letters
        # are read.
        dead = read(dead_letters, len(bad), meanwhile=lambda: sensor.step(0.05))
        assert_dead_lettered(dead, [value for _, value in bad])

    try:
        check()
        assert sensor.metrics.value("ctloop_sensor_dead_lettered_total") > 0
    finally:
        sensor.close()


def _monitor(settings: Settings, bus: KafkaBus) -> MonitorService:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)})
    reference = Reference(build_profile(frame, numeric=["x", "y"], categorical=["c"]), "churn", "3")
    monitor = DriftMonitor(reference, MonitorConfig(window=WindowPolicy(max_rows=10_000)))
    return MonitorService(bus, settings, monitor, group=f"monitor-{uuid.uuid4().hex[:6]}")


def test_the_drift_monitor_dead_letters_every_bad_prediction_batch_and_keeps_counting(
        kafka_settings, kafka_bus, dead_letters):
    service = _monitor(kafka_settings, kafka_bus)
    topic = kafka_settings.topics.predictions

    @EXAMPLES
    @given(st.lists(bad_prediction_batches(LIMIT), min_size=1, max_size=4))
    def check(bad: list[bytes]) -> None:
        for value in bad:
            kafka_bus.publish(topic, value)
        rows_before = service.stats.rows
        good = PredictionBatch(model="churn", version="3", rows=[{"x": 0.1, "y": 0.2, "c": "a"}], predictions=[1])
        kafka_bus.publish(topic, good.to_bytes(), key="churn")
        kafka_bus.flush()
        until(lambda: service.stats.rows > rows_before, lambda: service.step(timeout_s=0.2))
        assert_dead_lettered(read(dead_letters, len(bad)), bad)

    try:
        check()
    finally:
        service.close()


def test_an_event_id_reused_with_a_different_body_is_dead_lettered_not_taken_for_a_redelivery(
        kafka_settings, kafka_bus, dead_letters):
    engine = LocalEngine(kafka_settings, template=cheap_retrain(0.0))
    sensor = local_sensor(kafka_settings, kafka_bus, engine, policy=AdmissionPolicy(window_s=0))
    original = new_event(DataArrived(model="churn", uri="file:///data/churn/a", digest="a"), id="evt-1")
    impostor = new_event(DataArrived(model="churn", uri="file:///data/churn/b", digest="b"), id="evt-1")
    after = new_event(DataArrived(model="churn", uri="file:///data/churn/c", digest="c"), id="evt-2")
    for event in (original, original, impostor, after):
        kafka_bus.publish(kafka_settings.topics.data, to_bytes(event), key="churn")
    kafka_bus.flush()
    try:
        until(lambda: sensor.log.seen(after.id) and len(engine.runs.list()) == 2, lambda: sensor.step(0.2))
        [dead] = read(dead_letters, 1)
    finally:
        sensor.close()
    assert dead.value == to_bytes(impostor)
    assert "evt-1" in reason_of(dead) and "different" in reason_of(dead)
    assert sorted(r.parameters["data-digest"] for r in engine.runs.list()) == ["a", "c"]
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1, "the true redelivery is still skipped"

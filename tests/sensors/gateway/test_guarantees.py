"""Admission's guarantees, the same test bodies for the local path (LocalSensor) and the cluster path (rendered
Sensor mapping → admission topic → two gateway replicas), on the real broker, runs on the LocalEngine with a
cheap train step."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from ctloop.deadletter import reason_of
from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.settings import Settings, Topics
from ctloop.workflows.local.engine import LocalEngine
from tests.reliability.cheap_template import cheap_retrain
from tests.sensors.gateway.paths import ClusterPath, LocalPath, caught_up, drive, max_overlap, redeliver, runs
from tests.sensors.helpers import arrival, drift

pytestmark = pytest.mark.kafka
TRAIN_S = 0.4


@pytest.fixture
def settings(tmp_path, kafka_bootstrap):
    tag = uuid.uuid4().hex[:10]
    topics = Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}", admission=f"adm-{tag}")
    return Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics)


@pytest.fixture
def bus(settings):
    # A generous session: on a loaded machine a starved consumer is otherwise expelled from its group and the
    # test waits out a rebalance instead of testing admission.
    bus = KafkaBus(settings.kafka_bootstrap, partitions=1, session_timeout_ms=20000)
    yield bus
    bus.close()


@pytest.fixture(params=["local", "cluster"])
def admission(request, settings, bus):
    """Opens the path under test with a policy; closed at the end."""
    opened = []

    def open_path(policy: AdmissionPolicy):
        engine = LocalEngine(settings, template=cheap_retrain(TRAIN_S))
        path = (LocalPath if request.param == "local" else ClusterPath)(settings, bus, engine, policy)
        opened.append(path)
        return path

    yield open_path
    for path in opened:
        path.close()


def finished_on(settings, newest: dict[str, str]) -> bool:
    done = runs(settings)
    return all(r["end"] for r in done) and all(
        any(r["model"] == m and r["data_uri"] == uri for r in done) for m, uri in newest.items())


def test_a_burst_of_200_arrivals_for_3_models_runs_one_at_a_time_per_model_and_ends_on_the_newest_data(
        admission, settings, bus):
    rng = random.Random(15)
    newest: dict[str, str] = {}
    path = admission(AdmissionPolicy(window_s=0))
    publishing = 0.0  # the deciding runs while the burst arrives; only the arrivals' own time is the burst's
    for n in range(200):
        model = f"m{rng.randrange(3)}"
        uri = f"file:///data/{model}/d{n}"
        start = time.monotonic()
        bus.publish(settings.topics.data, arrival(model, f"d{n}", f"ev-{n}", uri=uri), key=model)
        publishing += time.monotonic() - start
        newest[model] = uri
        if n % 20 == 0:
            path.step()
    start = time.monotonic()
    bus.flush()
    assert publishing + time.monotonic() - start < 5, "the burst must arrive within a few seconds"
    drive(path, lambda: finished_on(settings, newest))
    done = runs(settings)
    assert max_overlap([(r["start"], r["end"]) for r in done]) <= 3
    for model in newest:
        mine = [(r["start"], r["end"]) for r in done if r["model"] == model]
        assert max_overlap(mine) == 1, f"{model} ran twice at once"
        assert [r for r in done if r["model"] == model][-1]["data_uri"] == newest[model]
    keys = [r["key"] for r in done]
    assert len(keys) == len(set(keys)), "a data/code pair trained twice"
    assert len(done) < 200, "bursts were not coalesced"
    decided = path.decisions()
    assert {f"ev-{n}" for n in range(200)} <= {event_id for event_id, _, _ in decided}, "an arrival went undecided"
    superseded = [event_id for event_id, kind, reason in decided
                  if kind == "coalesced" and "replaced by newer" in reason]
    assert len(set(superseded)) == 200 - len(done), "every arrival that did not run says it was superseded"


def test_the_same_data_and_code_never_train_twice(admission, settings, bus):
    path = admission(AdmissionPolicy(window_s=0))
    for n in range(30):  # 3 data versions, each announced by 10 different events, some redelivered
        digest = f"d{n % 3}"
        message = arrival("churn", digest, f"ev-{n}", uri=f"file:///data/churn/{digest}")
        bus.publish(settings.topics.data, message, key="churn")
        if n % 7 == 0:
            bus.publish(settings.topics.data, message, key="churn")
    bus.flush()
    drive(path, lambda: finished_on(settings, {"churn": "file:///data/churn/d2"}), then_s=1.5)
    keys = [r["key"] for r in runs(settings)]
    assert len(keys) == len(set(keys)) and 1 <= len(keys) <= 3


def test_a_drift_storm_within_the_cooldown_starts_one_run(admission, settings, bus):
    path = admission(AdmissionPolicy(window_s=0, drift_cooldown_s=3600))
    for n in range(50):
        bus.publish(settings.topics.drift, drift("churn", f"drift-{n}", data_uri=f"file:///live/{n}"), key="churn")
    bus.flush()
    drive(path, lambda: bool(runs(settings)) and all(r["end"] for r in runs(settings)), then_s=2.0)
    assert [r["data_uri"] for r in runs(settings)] == ["file:///live/0"]


def test_gpu_runs_never_exceed_the_cap(admission, settings, bus):
    path = admission(AdmissionPolicy(window_s=0, max_gpu_runs=2))
    newest = {}
    for n in range(40):
        model = f"g{n % 5}"
        uri = f"file:///data/{model}/d{n}"
        bus.publish(settings.topics.data, arrival(model, f"d{n}", f"ev-{n}", uri=uri, gpu=True), key=model)
        newest[model] = uri
    bus.flush()
    drive(path, lambda: finished_on(settings, newest))
    done = runs(settings)
    assert max_overlap([(r["start"], r["end"]) for r in done]) <= 2
    assert len({r["model"] for r in done}) == 5


def test_an_event_id_reused_with_a_different_body_is_dead_lettered_once_even_when_redelivered(
        admission, settings, bus):
    path = admission(AdmissionPolicy(window_s=0))
    original = arrival("churn", "a", "evt-1", uri="file:///data/churn/a")
    impostor = arrival("churn", "b", "evt-1", uri="file:///data/churn/b")
    for message in (original, original, impostor, arrival("churn", "c", "evt-2", uri="file:///data/churn/c")):
        bus.publish(settings.topics.data, message, key="churn")
    bus.flush()
    drive(path, lambda: finished_on(settings, {"churn": "file:///data/churn/c"}) and caught_up(settings, path.group))
    path.close()
    redeliver(settings, path.group)  # the decider's commits lost: every message comes again
    again = admission(AdmissionPolicy(window_s=0))
    drive(again, lambda: caught_up(settings, again.group))
    [dead] = bus.read_all(settings.topics.deadletter)
    assert reason_of(dead) == "event id evt-1 reused with a different body"
    assert b"file:///data/churn/b" in dead.value, "the impostor is what is kept"
    assert sorted(r["data_uri"] for r in runs(settings)) == ["file:///data/churn/a", "file:///data/churn/c"]
    assert [kind for event_id, kind, _ in again.decisions() if event_id == "evt-1"] == ["triggered"]

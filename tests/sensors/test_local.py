"""LocalSensor over the embedded bus: filters, mapping, admission, durability, dead letters."""

from __future__ import annotations

import pytest

from ctloop.consume import Unroutable
from ctloop.deadletter import reason_of
from ctloop.embedded_bus import EmbeddedBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import cluster_sensors
from ctloop.sensors.local.decisions import list_decisions
from ctloop.sensors.local.route import Route
from ctloop.sensors.mapping import MappingError, parameters
from ctloop.sensors.spec import Const, SensorSpec
from ctloop.settings import Settings
from ctloop.version import code_version
from ctloop.workflows.engine import RunHandle, RunRequest, idempotency_key
from tests.sensors.helpers import arrival, drain, drift, make_sensor
from tests.sensors.ledger import LedgerEngine


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path)


@pytest.fixture
def bus(settings):
    bus = EmbeddedBus(settings.state_db)
    yield bus
    bus.close()


@pytest.fixture
def engine(tmp_path):
    engine = LedgerEngine(tmp_path / "runs.db")
    yield engine
    engine.close()


def kinds(settings, event_id):
    return [r.kind for r in reversed(list_decisions(settings.state_db, event_id=event_id))]


def test_a_data_arrival_triggers_one_run_with_the_mapped_parameters(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1", uri="file:///d/churn/1"), key="churn")
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    [run] = engine.runs()
    assert (run["model"], run["data_uri"], run["event_id"], run["digest"], run["trigger"]) == (
        "churn", "file:///d/churn/1", "ev-1", "abc", "data")
    assert run["key"] == idempotency_key("churn", "abc", code_version())
    [decision] = list_decisions(settings.state_db, event_id="ev-1")
    assert (decision.kind, decision.run_id, decision.key) == ("triggered", run["run_id"], run["key"])
    assert decision.latency_ms is not None and decision.latency_ms >= 0
    sensor.close()


def test_offsets_are_committed_once_decided(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    sensor.close()
    assert bus.consumer([settings.topics.data], "ctloop-sensor").poll(timeout_s=0.05) == []


def test_redelivery_and_duplicate_keys_start_no_second_run(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1"))
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1"))
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-2"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    assert len(engine.runs()) == 1
    assert kinds(settings, "ev-1") == ["triggered"]
    assert kinds(settings, "ev-2") == ["deduped"]
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1
    sensor.close()


def test_malformed_messages_are_dead_lettered_and_consumption_continues(settings, bus, engine):
    bus.publish(settings.topics.data, b"{not json")
    bus.publish(settings.topics.data, b'{"specversion": "1.0", "id": "x", "type": "ctloop.data.arrived",'
                                      b' "source": "t", "data": {"model": ""}}')
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-ok"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    assert len(engine.runs()) == 1
    dead = bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05)
    reasons = [reason_of(m) for m in dead]
    assert len(reasons) == 2
    assert reasons[0].startswith("not JSON")
    assert "invalid ctloop.data.arrived" in reasons[1]
    assert sensor.metrics.value("ctloop_sensor_dead_lettered_total") == 2
    sensor.close()


def test_events_the_filters_reject_are_recorded_not_run(settings, bus, engine):
    bus.publish(settings.topics.drift, drift("churn", "d-quiet", dataset_drift=False))
    bus.publish(settings.topics.drift, drift("churn", "d-empty", rows=0))
    bus.publish(settings.topics.drift, drift("churn", "d-real"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    [run] = engine.runs()
    assert (run["event_id"], run["trigger"], run["data_uri"]) == ("d-real", "drift", "file:///data/live")
    [quiet] = list_decisions(settings.state_db, event_id="d-quiet")
    assert quiet.kind == "rejected" and "body.data.dataset_drift" in quiet.reason
    [empty] = list_decisions(settings.state_db, event_id="d-empty")
    assert empty.kind == "rejected" and "rows > 0" in empty.reason
    sensor.close()


def test_a_drift_event_without_labelled_data_is_rejected_with_the_fix_and_the_sensor_goes_on(settings, bus, engine):
    bus.publish(settings.topics.drift, drift("churn", "d-nodata", data_uri=None))
    bus.publish(settings.topics.drift, drift("churn", "d-real"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    assert [r["event_id"] for r in engine.runs()] == ["d-real"]
    [nodata] = list_decisions(settings.state_db, event_id="d-nodata")
    assert nodata.kind == "rejected" and nodata.model == "churn"
    assert nodata.reason == ("ctloop-drift: drift event for churn carries no data_uri: "
                             "set retrain_uri in the model's spec")
    assert bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05) == [], "refused, not unroutable"
    sensor.close()


def test_a_drift_run_is_followed_by_a_cooldown(settings, bus, engine):
    bus.publish(settings.topics.drift, drift("churn", "d1", data_uri="file:///live/1"))
    bus.publish(settings.topics.drift, drift("churn", "d2", data_uri="file:///live/2"))
    sensor = make_sensor(settings, bus, engine, policy=AdmissionPolicy(window_s=0, drift_cooldown_s=3600))
    drain(sensor)
    assert [r["event_id"] for r in engine.runs()] == ["d1"]
    assert kinds(settings, "d2") == ["rejected"]
    sensor.close()


def test_an_open_coalescing_window_survives_a_restart(settings, bus, engine):
    clock = [1000.0]
    policy = AdmissionPolicy(window_s=30)
    for n in range(3):
        bus.publish(settings.topics.data, arrival("churn", f"d{n}", f"ev-{n}"))
    sensor = make_sensor(settings, bus, engine, policy=policy, clock=lambda: clock[0])
    drain(sensor)
    assert engine.runs() == []
    sensor.close()  # as if killed: the window lives only in the state database now
    clock[0] += 31
    restarted = make_sensor(settings, bus, engine, policy=policy, clock=lambda: clock[0])
    drain(restarted)
    [run] = engine.runs()
    assert run["digest"] == "d2"
    assert kinds(settings, "ev-0") == ["deferred", "coalesced"]
    assert kinds(settings, "ev-2") == ["deferred", "triggered"]
    restarted.close()


def test_a_busy_model_runs_the_latest_queued_arrival_after_its_run(settings, bus, tmp_path):
    engine = LedgerEngine(tmp_path / "slow.db", instant=False)
    sensor = make_sensor(settings, bus, engine, status_interval_s=0)
    for n in range(3):
        bus.publish(settings.topics.data, arrival("churn", f"d{n}", f"ev-{n}"))
        drain(sensor)
    assert [r["digest"] for r in engine.runs()] == ["d0"]
    engine.complete(engine.runs()[0]["run_id"])
    drain(sensor)
    assert [r["digest"] for r in engine.runs()] == ["d0", "d2"]
    assert kinds(settings, "ev-1") == ["deferred", "coalesced"]
    sensor.close()
    engine.close()


def test_a_run_the_engine_already_has_is_not_started_again(settings, bus, engine):
    engine.submit(RunRequest(model="churn", data_uri="file:///data/churn/abc", trigger_event_id="ev-1",
                             trigger="data", data_digest="abc"))
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    assert len(engine.runs()) == 1 and engine.refused() == 1
    [decision] = list_decisions(settings.state_db, event_id="ev-1")
    assert decision.kind == "deduped" and "engine refused" in decision.reason
    sensor.close()


class Unavailable:
    def submit(self, request, *, wait=True):
        raise ConnectionError("engine down")

    def status(self, run_id):
        raise ConnectionError("engine down")


def test_a_reserved_run_is_submitted_after_the_engine_comes_back(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1"))
    down = make_sensor(settings, bus, Unavailable())
    drain(down)
    assert down.metrics.value("ctloop_sensor_submit_errors_total") >= 1
    down.close()
    up = make_sensor(settings, bus, engine)
    up.advance()
    assert [r["event_id"] for r in engine.runs()] == ["ev-1"]
    up.close()


def test_a_missing_digest_is_resolved_by_snapshotting_the_uri(settings, bus, engine, tmp_path):
    data = tmp_path / "incoming"
    data.mkdir()
    (data / "part-0.csv").write_text("a,b\n1,2\n")
    bus.publish(settings.topics.data, arrival("churn", None, "ev-1", uri=data.as_uri() + "/"))
    bus.publish(settings.topics.data, arrival("churn", None, "ev-2", uri=(tmp_path / "missing").as_uri() + "/"))
    sensor = make_sensor(settings, bus, engine, snapshot_digests=True)
    drain(sensor)
    [run] = engine.runs()
    assert run["event_id"] == "ev-1" and run["digest"]
    assert run["key"] == idempotency_key("churn", run["digest"], code_version())
    [dead] = bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05)
    assert "cannot snapshot" in reason_of(dead)
    sensor.close()


def test_a_redelivery_is_skipped_before_its_data_is_snapshotted_again(settings, bus, engine, tmp_path):
    data = tmp_path / "incoming"
    data.mkdir()
    (data / "part-0.csv").write_text("a,b\n1,2\n")
    event = arrival("churn", None, "ev-1", uri=data.as_uri() + "/")
    bus.publish(settings.topics.data, event)
    sensor = make_sensor(settings, bus, engine, snapshot_digests=True)
    drain(sensor)
    (data / "part-0.csv").unlink()
    bus.publish(settings.topics.data, event)
    drain(sensor)
    assert [r["event_id"] for r in engine.runs()] == ["ev-1"]
    assert bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05) == []
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1
    sensor.close()


def test_an_event_id_reused_with_a_different_body_is_dead_lettered(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "a", "ev-1"))
    bus.publish(settings.topics.data, arrival("churn", "a", "ev-1"))
    bus.publish(settings.topics.data, arrival("churn", "b", "ev-1"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    assert [r["digest"] for r in engine.runs()] == ["a"]
    [dead] = bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05)
    assert "ev-1 reused with a different body" in reason_of(dead)
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1
    sensor.close()


BODIES = [
    {"id": "ev-1", "data": {"model": "churn", "uri": "s3://d/churn/1", "digest": "abc"}},
    {"id": "ev-2", "data": {"model": "churn", "uri": "s3://d/churn/2", "digest": None}},
    {"id": "ev-3", "data": {"model": "churn", "uri": "s3://d/churn/3", "digest": 0, "data_uri": "s3://l/3"}},
    {"id": "ev-4", "data": {"model": "churn", "uri": ""}},
    {"id": "ev-5", "data": {"model": 7, "uri": "s3://d/7"}},
    {"id": "ev-6", "data": {"uri": "s3://d/none"}},
    {"data": {"model": "churn", "uri": [1, 2]}},
]
NOTIFICATIONS = [
    {"notification": [{"eventName": "s3:ObjectCreated:Put",
                       "s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/churn/x.parquet", "eTag": "e1"}}}]},
    {"notification": [{"s3": {"object": {"key": "flat.parquet"}}}]},
    {"notification": []},
]


@pytest.mark.parametrize("data", [{"body": body} for body in BODIES] + NOTIFICATIONS)
def test_the_sensor_maps_parameters_exactly_as_the_mapping_module(data):
    context = {"id": "ctx-id", "type": "t", "source": "s", "subject": ""}
    for spec in cluster_sensors(Settings(), "v1"):
        try:
            # The sensor checks the workflow name (it names the run in the cluster) but does not make it.
            expected = {k: v for k, v in parameters(spec, data, context).items() if k != "workflow-name"}
        except MappingError as exc:
            expected = f"{spec.name}: {exc}"
        try:
            got = Route.of(spec).parameters(data, context)
        except Unroutable as exc:
            got = str(exc)
        assert got == expected, spec.name


def test_messages_decided_but_not_committed_are_skipped_unread_after_a_crash(settings, bus, engine):
    for n in range(3):
        bus.publish(settings.topics.data, arrival(f"m{n}", f"d{n}", f"ev-{n}"))
    crashed = make_sensor(settings, bus, engine, commit_interval_s=3600)
    assert crashed.step(0.05) == 3  # decided and recorded; the offsets never committed (no close)
    # A bound of 0 recent ids: only the partition's watermark can know the redelivered messages.
    sensor = make_sensor(settings, bus, engine, recent_events=0)
    drain(sensor)
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 3
    assert sensor.metrics.value("ctloop_sensor_decisions_total", kind="triggered") == 0
    assert [kinds(settings, f"ev-{n}") for n in range(3)] == [["triggered"]] * 3
    sensor.close()


def test_a_duplicate_older_than_the_recent_bound_is_decided_again_and_runs_nothing(settings, bus, engine):
    """Beyond `recent_events` ids back, a producer's duplicate is a new event to the sensor: a second decision,
    `deduped` by its key, not counted as redelivered."""
    sensor = make_sensor(settings, bus, engine, recent_events=2, batch_size=1)
    for n in range(5):
        bus.publish(settings.topics.data, arrival("churn", f"d{n}", f"ev-{n}"))
        drain(sensor)
    bus.publish(settings.topics.data, arrival("churn", "d4", "ev-4"))  # within the bound: a redelivery
    bus.publish(settings.topics.data, arrival("churn", "d0", "ev-0"))  # beyond it: decided again
    drain(sensor)
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1
    assert kinds(settings, "ev-0") == ["triggered", "deduped"]
    assert kinds(settings, "ev-4") == ["triggered"]
    assert len(engine.runs()) == 5
    sensor.close()


def test_the_recent_ids_are_rebuilt_at_start_so_a_reused_id_is_still_dead_lettered(settings, bus, engine):
    bus.publish(settings.topics.data, arrival("churn", "a", "ev-1"))
    first = make_sensor(settings, bus, engine)
    drain(first)
    first.close()
    bus.publish(settings.topics.data, arrival("churn", "a", "ev-1"))
    bus.publish(settings.topics.data, arrival("churn", "b", "ev-1"))
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    [dead] = bus.consumer([settings.topics.deadletter], "t").poll(timeout_s=0.05)
    assert "ev-1 reused with a different body" in reason_of(dead)
    assert sensor.metrics.value("ctloop_sensor_redelivered_total") == 1
    assert [r["digest"] for r in engine.runs()] == ["a"]
    sensor.close()


def test_an_offered_event_whose_trigger_is_unknown_is_rejected_and_the_state_still_loads(settings, bus, engine):
    """A candidate is not validated when made: the sensor checks its trigger, so no unreadable state is saved."""
    spec = next(s for s in cluster_sensors(settings, "v1") if s.name == "ctloop-data-arrived")
    nightly = SensorSpec(spec.name, spec.dependency, {**spec.params, "trigger": Const("nightly")})
    body = {"type": "ctloop.data.arrived", "id": "ev-n", "data": {"model": "churn", "uri": "s3://d/n", "digest": "dn"}}
    sensor = make_sensor(settings, bus, engine)
    assert sensor.offer(nightly, {"body": body}, {"id": "ev-n"}, event_time=1.0) == ()
    sensor.close()
    [decision] = list_decisions(settings.state_db, event_id="ev-n")
    assert (decision.kind, decision.reason) == (
        "rejected", "ctloop-data-arrived: trigger 'nightly' is not one of "
                    "('data', 'drift', 'manual', 'schedule', 'quality')")
    assert engine.runs() == []
    make_sensor(settings, bus, engine).close()  # the saved admission state loads


class Recording:
    """An engine that keeps the requests it is sent and starts each run as pending."""

    def __init__(self):
        self.requests = []

    def submit(self, request, *, wait=True):
        self.requests.append(request)
        return RunHandle(run_id=f"run-{len(self.requests)}", idempotency_key=request.idempotency_key,
                         status="Pending")

    def status(self, run_id):
        return "Running"


def test_the_engine_is_sent_the_run_request_a_caller_would_make(settings, bus):
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-1", uri="file:///d/churn/1"), key="churn")
    engine = Recording()
    sensor = make_sensor(settings, bus, engine)
    drain(sensor)
    [request] = engine.requests
    assert type(request) is RunRequest
    expected = RunRequest(model="churn", data_uri="file:///d/churn/1", trigger_event_id="ev-1", trigger="data",
                          data_digest="abc", gpu=False, idempotency_key=idempotency_key("churn", "abc", code_version()))
    assert request == expected and request.model_fields_set == expected.model_fields_set
    assert request.params == {} and request.model_dump() == expected.model_dump()
    [decision] = list_decisions(settings.state_db, event_id="ev-1")
    assert (decision.kind, decision.run_id, decision.reason) == ("triggered", "run-1", "run run-1 submitted")
    sensor.close()

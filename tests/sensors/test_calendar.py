"""Scheduled ticks in the local sensor, under a clock the test controls: when they fire, and that each goes
through the same admission control as an arrival (dedupe by data, coalescing, cooldown, GPU cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.modelspec import DataSchema, Feature, ModelSpec, Schedule
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import kafka_sensors, schedule_sensors
from ctloop.sensors.local.calendar import TICK_PREFIX, Calendar, tick_id
from ctloop.sensors.local.decisions import list_decisions
from ctloop.sensors.local.sensor import LocalSensor, snapshot_digest
from ctloop.settings import Settings
from ctloop.version import code_version
from tests.sensors.helpers import arrival, drift
from tests.sensors.ledger import LedgerEngine

BERLIN = "Europe/Berlin"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def to(self, when: datetime) -> None:
        assert when.timestamp() >= self.now, "the clock only moves forward"
        self.now = when.timestamp()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home")


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


@pytest.fixture
def landing(tmp_path):
    """The prefix the schedule retrains on, with one batch in it."""
    path = tmp_path / "landing" / "churn"
    path.mkdir(parents=True)
    land(path, "day-1.csv")
    return path


def land(prefix: Path, name: str) -> None:
    (prefix / name).write_text(f"x,y\n1,0\n2,1\n# {name}\n")


def model(prefix: Path, name: str = "churn", **schedule: object) -> ModelSpec:
    schedule = {"cron": "30 2 * * *", "timezone": BERLIN} | schedule
    return ModelSpec(name=name, data=DataSchema(features=(Feature(name="x"),), label="y"),
                     schedule=Schedule(data_uri=f"file://{prefix}/", **schedule))


def sensor(settings, bus, engine, clock, *models: ModelSpec, **policy: float) -> LocalSensor:
    specs = [*kafka_sensors(settings, code_version()), *schedule_sensors(models, code_version())]
    return LocalSensor(settings, bus, engine, specs, policy=AdmissionPolicy(**policy), clock=clock,
                       resolve_digest=snapshot_digest(settings))


def ticks(settings, model_name: str = "churn") -> list[tuple[str, str, str]]:
    """(event id, kind, reason) of every tick decision, oldest first."""
    rows = list_decisions(settings.state_db, event_prefix=f"{TICK_PREFIX}{model_name}@", limit=1000)
    return [(r.event_id, r.kind, r.reason) for r in reversed(rows)]


def walk(the_sensor: LocalSensor, clock: Clock, until: datetime, step: timedelta = timedelta(minutes=10)) -> None:
    """Move the clock forward in steps, letting the sensor work at each."""
    while clock.now < until.timestamp():
        clock.to(min(until, datetime.fromtimestamp(clock.now, UTC) + step))
        the_sensor.step(0)


def test_nightly_ticks_skip_the_missing_0230_in_spring_and_fire_twice_in_the_repeated_autumn_hour(
        settings, bus, engine, landing):
    clock = Clock(at("2026-03-27T12:00:00+01:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    walk(s, clock, at("2026-03-31T12:00:00+02:00"))
    assert [e for e, _, _ in ticks(settings)] == [
        tick_id("churn", at("2026-03-28T02:30:00+01:00")),
        # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 never happens that day.
        tick_id("churn", at("2026-03-30T02:30:00+02:00")),
        tick_id("churn", at("2026-03-31T02:30:00+02:00")),
    ]
    clock.to(at("2026-10-24T12:00:00+02:00"))
    s.step(0)  # the half-year gap is caught up once
    walk(s, clock, at("2026-10-26T12:00:00+01:00"))
    assert [e for e, _, _ in ticks(settings)][3:] == [
        tick_id("churn", at("2026-10-24T02:30:00+02:00")),
        # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, an hour apart.
        tick_id("churn", at("2026-10-25T02:30:00+02:00")),
        tick_id("churn", at("2026-10-25T02:30:00+01:00")),
        tick_id("churn", at("2026-10-26T02:30:00+01:00")),
    ]
    fired_at = {r.event_id: r.at for r in list_decisions(settings.state_db, event_prefix=TICK_PREFIX, limit=1000)}
    for event_id, when in fired_at.items():
        scheduled = datetime.strptime(event_id.split("@")[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        if event_id != tick_id("churn", at("2026-10-24T02:30:00+02:00")):  # the caught-up one fired late
            assert scheduled <= when < scheduled + 600, event_id
    s.close()


def test_an_unchanged_prefix_never_trains_twice_and_a_changed_one_trains_once(settings, bus, engine, landing):
    clock = Clock(at("2026-06-01T12:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    walk(s, clock, at("2026-06-03T12:00:00+02:00"), step=timedelta(hours=1))
    land(landing, "day-3.csv")
    walk(s, clock, at("2026-06-05T12:00:00+02:00"), step=timedelta(hours=1))
    decided = ticks(settings)
    assert [kind for _, kind, _ in decided] == ["triggered", "deduped", "triggered", "deduped"]
    for _, kind, reason in decided:
        if kind == "deduped":
            assert reason.startswith("no change since the last run (same data digest and code version): skipped")
    runs = engine.runs()
    assert [r["trigger"] for r in runs] == ["schedule", "schedule"]
    assert [r["event_id"] for r in runs] == [decided[0][0], decided[2][0]]
    assert all(r["data_uri"] == f"file://{landing}/" for r in runs)
    assert runs[0]["digest"] != runs[1]["digest"]
    s.close()


def test_a_tick_during_a_running_retrain_of_the_model_coalesces_with_the_queued_arrival(settings, bus, tmp_path,
                                                                                         landing):
    engine = LedgerEngine(tmp_path / "slow-runs.db", instant=False)
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    s.step(0)
    bus.publish(settings.topics.data, arrival("churn", "aaa", "ev-running"), key="churn")
    bus.publish(settings.topics.data, arrival("churn", "bbb", "ev-queued"), key="churn")
    s.step(0)
    [running] = engine.runs()
    assert running["event_id"] == "ev-running"
    walk(s, clock, at("2026-06-01T02:40:00+02:00"))
    tick = tick_id("churn", at("2026-06-01T02:30:00+02:00"))
    assert [(k, r) for _, k, r in ticks(settings)] == [
        ("deferred", "churn has a run in progress; queued (latest only)")]
    [coalesced] = [r for r in list_decisions(settings.state_db, event_id="ev-queued") if r.kind == "coalesced"]
    assert coalesced.reason == f"queued run replaced by newer {tick}"
    engine.complete(running["run_id"])
    walk(s, clock, at("2026-06-01T02:50:00+02:00"))
    assert [r["event_id"] for r in engine.runs()] == ["ev-running", tick], "one run on the newest snapshot"
    s.close()
    engine.close()


def test_a_tick_for_the_data_already_being_trained_starts_no_second_run(settings, bus, tmp_path,
                                                                                      landing):
    engine = LedgerEngine(tmp_path / "slow-runs.db", instant=False)
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    # An arrival naming the whole prefix, without a digest: the sensor snapshots it as the tick will.
    bus.publish(settings.topics.data, arrival("churn", None, "ev-prefix", uri=f"file://{landing}/"), key="churn")
    s.step(0)
    walk(s, clock, at("2026-06-01T02:40:00+02:00"))
    [(_, kind, reason)] = ticks(settings)
    [running] = engine.runs()
    assert kind == "deduped" and reason.startswith("no change since the last run") and running["key"] in reason
    s.close()
    engine.close()


def test_a_sensor_down_for_five_ticks_catches_up_once_on_the_newest(settings, bus, engine, landing):
    clock = Clock(at("2026-06-01T12:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    walk(s, clock, at("2026-06-02T12:00:00+02:00"), step=timedelta(hours=1))
    s.close()
    assert len(engine.runs()) == 1
    land(landing, "while-down.csv")
    clock.to(at("2026-06-07T12:00:00+02:00"))  # 02:30 on the 3rd, 4th, 5th, 6th and 7th came and went
    s = sensor(settings, bus, engine, clock, model(landing))
    for _ in range(3):
        s.step(0)
    newest = tick_id("churn", at("2026-06-07T02:30:00+02:00"))
    assert [e for e, _, _ in ticks(settings)][1:] == [newest]
    assert [r["event_id"] for r in engine.runs()][1:] == [newest]
    record = s.calendar.record("ctloop-schedule-churn")
    assert (record.last_tick, record.missed) == (at("2026-06-07T02:30:00+02:00"), 4)
    walk(s, clock, at("2026-06-08T12:00:00+02:00"), step=timedelta(hours=1))
    assert [k for _, k, _ in ticks(settings)][2:] == ["deduped"], "back on schedule the next night"
    s.close()


def test_a_new_schedule_does_not_fire_for_ticks_before_it_existed(settings, bus, engine, landing):
    clock = Clock(at("2026-06-01T12:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    s.step(0)
    assert ticks(settings) == [] and engine.runs() == []
    walk(s, clock, at("2026-06-02T02:29:00+02:00"))
    assert ticks(settings) == []
    s.close()


def test_offering_a_tick_again_after_a_crash_decides_nothing_twice(settings, bus, engine, landing):
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing))
    s.step(0)
    clock.to(at("2026-06-01T02:31:00+02:00"))
    [due] = s.calendar.due(clock())
    first = s.offer(due.spec, due.data, due.context, event_time=due.at.timestamp())
    assert [d.kind for d in first] == ["triggered"]
    # Killed before the calendar recorded the tick: on restart the same tick is due again.
    s.close()
    s = sensor(settings, bus, engine, clock, model(landing))
    s.step(0)
    assert len(engine.runs()) == 1 and [k for _, k, _ in ticks(settings)] == ["triggered"]
    assert s.calendar.record("ctloop-schedule-churn").last_tick == due.at
    s.close()


def test_a_tick_within_the_drift_cooldown_is_rejected(settings, bus, engine, landing, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    land(live, "window.csv")
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing), drift_cooldown_s=3600)
    bus.publish(settings.topics.drift, drift("churn", "d-1", data_uri=f"file://{live}/"), key="churn")
    s.step(0)
    assert [r["trigger"] for r in engine.runs()] == ["drift"]
    walk(s, clock, at("2026-06-01T02:40:00+02:00"))
    [(_, kind, reason)] = ticks(settings)
    assert kind == "rejected" and reason.startswith("drift cooldown for churn until")
    assert len(engine.runs()) == 1
    s.close()


def test_a_gpu_tick_waits_for_the_gpu_cap(settings, bus, tmp_path, landing):
    engine = LedgerEngine(tmp_path / "slow-runs.db", instant=False)
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(landing, gpu=True), max_gpu_runs=1)
    bus.publish(settings.topics.data, arrival("fraud", "f1", "ev-gpu", gpu=True), key="fraud")
    s.step(0)
    walk(s, clock, at("2026-06-01T02:40:00+02:00"))
    [(_, kind, reason)] = ticks(settings)
    assert (kind, reason) == ("deferred", "GPU cap reached; queued (latest only)")
    engine.complete(engine.runs()[0]["run_id"])
    walk(s, clock, at("2026-06-01T02:50:00+02:00"))
    assert [r["trigger"] for r in engine.runs()] == ["data", "schedule"]
    s.close()
    engine.close()


def test_a_tick_on_an_empty_prefix_is_recorded_as_refused_and_the_sensor_goes_on(settings, bus, engine, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    clock = Clock(at("2026-06-01T02:00:00+02:00"))
    s = sensor(settings, bus, engine, clock, model(empty))
    walk(s, clock, at("2026-06-01T02:40:00+02:00"))
    [(_, kind, reason)] = ticks(settings)
    assert kind == "rejected" and "no data objects under" in reason
    bus.publish(settings.topics.data, arrival("churn", "abc", "ev-after"), key="churn")
    s.step(0)
    assert [r["event_id"] for r in engine.runs()] == ["ev-after"]
    s.close()


def test_a_changed_schedule_is_armed_anew_rather_than_caught_up(settings, tmp_path, landing):
    clock = Clock(at("2026-06-01T12:00:00+02:00"))
    [nightly] = schedule_sensors([model(landing)], "v1")
    [hourly] = schedule_sensors([model(landing, cron="0 * * * *")], "v1")
    calendar = Calendar(settings.state_db, "g", [nightly])
    assert calendar.due(clock()) == []
    calendar.close()
    clock.to(at("2026-06-03T12:00:00+02:00"))
    calendar = Calendar(settings.state_db, "g", [hourly])
    assert calendar.due(clock()) == [], "the hourly ticks of the last two days never existed"
    clock.to(at("2026-06-03T13:05:00+02:00"))
    [due] = calendar.due(clock())
    assert (due.at, due.missed) == (at("2026-06-03T13:00:00+02:00"), 0)
    calendar.close()

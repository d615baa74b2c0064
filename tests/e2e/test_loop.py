"""The demo's story end to end on the real Kafka broker and a real `mlflow server`, checked from the outside:
the registry over HTTP, the events on the broker's topics, the run store and the sensor's decision log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from ctloop.app.demo.journal import load_journal
from ctloop.app.demo.narration import Silent
from ctloop.app.demo.runner import DemoOptions, demo_settings, run_demo
from ctloop.app.demo.story import StoryConfig
from ctloop.app.demo.summary import Summary
from ctloop.deploy.registry import CHAMPION, Registry, VersionInfo
from ctloop.events import parse
from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.local.decisions import list_decisions
from ctloop.settings import Settings
from ctloop.workflows.local.run_store import RunStore

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.mlflow_server]


@dataclass(frozen=True)
class Played:
    summary: Summary
    settings: Settings
    model: str
    versions: list[VersionInfo]
    aliases: dict[str, str]
    audit: list[dict]


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mlflow_server: str) -> Played:
    home = tmp_path_factory.mktemp("demo-home")
    model = f"renewals-{uuid.uuid4().hex[:8]}"
    # A wider coalescing window than the default: on a loaded machine the burst may reach the sensor in
    # more than one fetch, and the window must still be open for the later ones.
    options = DemoOptions(home=home, kafka=kafka_bootstrap, tracking_uri=mlflow_server,
                          story=StoryConfig(model=model), coalesce_window_s=3.0)
    summary = run_demo(options, Silent())
    journal = load_journal(home)
    assert journal is not None
    settings = demo_settings(options, journal)
    registry = Registry(mlflow_server)
    info = registry.model(model)
    return Played(summary, settings, model, registry.versions(model), info.aliases, info.audit)


def _topic_events(settings: Settings, topic: str) -> dict[str, object]:
    """Every event on a topic of the real broker, read back by a group of its own: id -> event."""
    bus = KafkaBus(settings.kafka_bootstrap)
    consumer = bus.consumer([topic], group=f"e2e-reader-{uuid.uuid4().hex[:8]}")
    try:
        events, empty_polls = {}, 0
        while empty_polls < 3:
            batch = consumer.poll(timeout_s=1.0)
            empty_polls = 0 if batch else empty_polls + 1
            for message in batch:
                event = parse(message.value)
                events[event.id] = event
        return events
    finally:
        consumer.close()
        bus.close()


def test_the_story_keeps_every_promise(played: Played):
    failed = [f"{c.name}: {c.detail}" for c in played.summary.checks if not c.ok]
    assert not failed
    assert played.summary.bus == "kafka"
    assert played.summary.tracking_uri == played.settings.tracking_uri


def test_at_least_three_versions_and_a_rejected_challenger(played: Played):
    assert len(played.versions) >= 3
    rejected = [v for v in played.versions if v.decision == "reject"]
    assert rejected
    assert all(v.reasons for v in rejected)
    assert all(CHAMPION not in played.aliases or played.aliases[CHAMPION] != v.version for v in rejected)


def test_a_drift_event_caused_the_run_that_made_the_champion(played: Played):
    drift_events = _topic_events(played.settings, played.settings.topics.drift)
    assert len(drift_events) == 1
    champion = next(v for v in played.versions if v.version == played.aliases[CHAMPION])
    assert champion.tags["ctloop.event_id"] in drift_events
    runs = RunStore(played.settings.state_db)
    try:
        drift_runs = [r for r in runs.list(model=played.model) if r.trigger == "drift"]
    finally:
        runs.close()
    assert [r.trigger_event_id for r in drift_runs] == [champion.tags["ctloop.event_id"]]


def test_a_manual_promotion_then_a_rollback_are_in_the_audit_trail(played: Played):
    actions = [(a["action"], a.get("manual"), a.get("version")) for a in played.audit]
    manual = [i for i, (action, is_manual, _) in enumerate(actions) if action == "promote" and is_manual]
    rollbacks = [i for i, (action, _, _) in enumerate(actions) if action == "rollback"]
    assert manual and rollbacks and rollbacks[-1] > manual[-1]
    assert actions[rollbacks[-1]][2] == played.aliases[CHAMPION]
    assert all(a["actor"] for a in played.audit)


def test_every_version_points_to_the_event_that_caused_it(played: Played):
    """Lineage: version tag event_id == the event the sensor recorded as triggering the run that trained it,
    and that event is on the data or drift topic of the broker."""
    on_topics = {**_topic_events(played.settings, played.settings.topics.data),
                 **_topic_events(played.settings, played.settings.topics.drift)}
    runs = RunStore(played.settings.state_db)
    try:
        for version in played.versions:
            event_id = version.tags.get("ctloop.event_id")
            assert event_id, f"v{version.version} has no event_id tag"
            assert event_id in on_topics, f"v{version.version}'s event {event_id} is on no topic"
            triggered = [d for d in list_decisions(played.settings.state_db, event_id=event_id)
                         if d.kind == "triggered"]
            assert len(triggered) == 1, f"v{version.version}: sensor decisions {triggered}"
            run = runs.get(triggered[0].run_id)
            assert run.trigger_event_id == event_id
            assert run.status == "Succeeded"
            assert run.step("train").outputs["run-id"] == version.run_id == version.tags["ctloop.run_id"]
            expected = "drift" if on_topics[event_id].type == "ctloop.drift.detected" else "data"
            assert run.trigger == expected
    finally:
        runs.close()


def test_events_the_sensor_did_not_run_are_explained(played: Played):
    for event in played.summary.events:
        if event.run_id is None:
            assert event.decisions, f"event {event.id} has no recorded decision"
            assert event.outcome.startswith("no run:")


def test_serving_logged_prediction_batches_to_the_broker(played: Played):
    bus = KafkaBus(played.settings.kafka_bootstrap)
    consumer = bus.consumer([played.settings.topics.predictions], group=f"e2e-reader-{uuid.uuid4().hex[:8]}")
    try:
        versions, empty_polls = set(), 0
        while empty_polls < 3:
            batch = consumer.poll(timeout_s=1.0)
            empty_polls = 0 if batch else empty_polls + 1
            for message in batch:
                from ctloop.predictions import parse_batch

                versions.add(parse_batch(message.value).version)
    finally:
        consumer.close()
        bus.close()
    assert len(versions) >= 2, f"predictions came from versions {versions}; serving should follow the promotion"

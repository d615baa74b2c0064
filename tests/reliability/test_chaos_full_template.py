"""The full retrain template (snapshot → validate → train → evaluate → promote/register) under every kind of
fault in one run, audited from the registry and the bus: the sensor/engine process SIGKILLed at the
`model-registered` crash point and again mid-step, the broker SIGKILLed with messages in flight, the
registry SIGKILLed while a step talks to it; each restarted on the same port."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ctloop.kafka_local import LocalKafka
from tests.fixtures.mlflow_server import MlflowServer
from tests.reliability.chaos_full import Plan, run_full_chaos, table

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.mlflow_server]

PLAN = Plan(targets=("crash:model-registered", "train|evaluate|promote|register"), broker_kill_rounds=(1,),
            registry_kill_rounds=(1,), models=2, batches=2)


@pytest.fixture
def broker(tmp_path: Path):
    """A broker of this test's own: it is SIGKILLed and restarted, which a shared one must not be."""
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def registry(tmp_path: Path):
    server = MlflowServer(tmp_path / "mlflow").start()
    yield server
    server.stop()


def test_the_full_template_under_engine_broker_and_registry_kills_loses_and_duplicates_nothing(
        tmp_path, broker, registry):
    outcome = run_full_chaos(tmp_path / "run", PLAN, random.Random(19), broker=broker, registry=registry)
    print(table(outcome))
    figures = outcome.audit
    kinds = [(k.kind, k.during) for k in outcome.kills]
    assert ("engine", "crash point model-registered") in kinds, kinds
    assert [k for k, _ in kinds].count("engine") == 2
    assert ("broker", "publishing") in kinds, "the broker died with messages still to publish"
    assert any(kind == "registry" and during != "no registry step running" for kind, during in kinds), kinds

    assert figures.problems == ()
    assert outcome.events_decided == outcome.events > 0, "every event published has a decision"
    assert figures.lost == 0 and figures.expected_registrations >= PLAN.models
    assert figures.duplicate_registrations == 0 and figures.versions >= figures.expected_registrations
    assert figures.alias_moves >= PLAN.models, "each model's first version became champion"
    assert figures.duplicate_alias_moves == 0 and figures.unannounced_alias_moves == 0
    assert figures.phantom_announcements == 0 and figures.unexplained_alias_moves == 0
    # Every bad message dead-lettered exactly once, counted without de-duplication.
    assert figures.dead_letters == figures.bad_messages == 3 and figures.dead_lettered_not_once == 0

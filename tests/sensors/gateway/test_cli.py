"""`ctloop events list` run as a user runs it (the installed command, settings from the environment) shows the
admission gateway's decisions, from its store after a real replica decided on the real broker, next to the
sensor's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway import gateway
from ctloop.settings import Settings, Topics
from tests.sensors.gateway.helpers import request, step_until
from tests.sensors.helpers import arrival, drain, make_sensor
from tests.sensors.ledger import LedgerEngine

CTLOOP = str(Path(sys.executable).with_name("ctloop"))


def ctloop(home: Path, *args: str, store_url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTLOOP_")}
    env["CTLOOP_HOME"] = str(home)
    if store_url is not None:
        env["CTLOOP_GATEWAY_STORE_URL"] = store_url
    return subprocess.run([CTLOOP, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.kafka
def test_events_list_shows_the_gateways_decisions_with_the_sensors_newest_first(
        tmp_path, kafka_bootstrap, store_url):
    home = tmp_path / "home"
    local = Settings(home=home, bus="embedded")
    bus = EmbeddedBus(local.state_db)
    bus.publish(local.topics.data, arrival("churn", "s1", "ev-sensor"))
    ledger = LedgerEngine(tmp_path / "ledger.db")
    sensor = make_sensor(local, bus, ledger)
    drain(sensor)
    sensor.close()
    bus.close()

    tag = uuid.uuid4().hex[:10]
    cluster = Settings(home=home, kafka_bootstrap=kafka_bootstrap, gateway_store_url=store_url,
                       topics=Topics(admission=f"adm-{tag}", deadletter=f"dead-{tag}"))
    kafka = KafkaBus(kafka_bootstrap)
    for event_id, digest in (("e1", "d1"), ("e2", "d1"), ("e3", "d2")):  # e2 asks for e1's data again
        kafka.publish(cluster.topics.admission, request("churn", digest, event_id), key="churn")
    kafka.flush()
    replica = gateway(cluster, kafka, ledger, group=f"g-{tag}", replica="r0", policy=AdmissionPolicy(window_s=0),
                      status_interval_s=0.05)
    try:  # e3 waits for e1's run to end
        step_until(replica, lambda: ("e3", "triggered") in {(d.event_id, d.kind) for d in replica.store.decisions()})
        stored = [(d.event_id, d.kind, d.reason, d.run_id) for d in replica.store.decisions()]
    finally:
        replica.close()
        kafka.close()
        ledger.close()

    listed = ctloop(home, "events", "list", "--json", store_url=store_url)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["at"] for r in rows] == sorted((r["at"] for r in rows), reverse=True), "newest first"
    assert [(r["event_id"], r["kind"]) for r in rows if r["decider"] == "sensor"] == [("ev-sensor", "triggered")]
    gateway_rows = [r for r in rows if r["decider"] == "gateway"]
    assert [(r["event_id"], r["kind"], r["reason"], r["run_id"]) for r in reversed(gateway_rows)] == stored
    assert {r["replica"] for r in gateway_rows} == {"r0"}
    assert {(e, k) for e, k, _, _ in stored} >= {("e1", "triggered"), ("e2", "deduped"), ("e3", "triggered")}
    assert rows[-1]["event_id"] == "ev-sensor", "the sensor decided before the gateway did"

    text = ctloop(home, "events", "list", "--model", "churn", "--event", "e2", store_url=store_url)
    assert text.returncode == 0, text.stderr
    [line] = text.stdout.splitlines()
    assert " deduped " in line and "event=e2" in line and "gateway=r0" in line

    newest = ctloop(home, "events", "list", "--json", "--limit", "2", store_url=store_url)
    assert [json.loads(line) for line in newest.stdout.splitlines()] == rows[:2]


def test_events_list_reads_an_absent_gateway_store_as_empty_and_does_not_create_it(tmp_path):
    listed = ctloop(tmp_path / "home", "events", "list")
    assert listed.returncode == 0, listed.stderr
    assert "no decisions recorded" in listed.stderr
    assert not (tmp_path / "home" / "gateway.db").exists()


def test_events_list_names_an_unreachable_gateway_store_without_its_password(tmp_path):
    from ctloop.kafka_local import free_port

    url = f"postgresql+psycopg2://ctloop:s3cret@127.0.0.1:{free_port()}/ctloop"
    listed = ctloop(tmp_path / "home", "events", "list", store_url=url)
    assert listed.returncode == 1
    assert "cannot read the admission gateway's store postgresql+psycopg2://ctloop:***@127.0.0.1" in listed.stderr
    assert "CTLOOP_GATEWAY_STORE_URL" in listed.stderr and "s3cret" not in listed.stderr

"""A gateway replica SIGKILLed mid-stream: the other takes its partitions, nothing is lost, nothing runs twice.
Real broker, replicas as processes, their shared store on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.gateway import GatewayStore
from tests.sensors.gateway.helpers import request
from tests.sensors.ledger import LedgerEngine

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[3]


def wait_for(what, predicate, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_replicas_partitions_move_to_the_other_and_nothing_is_lost_or_run_twice(
        tmp_path, kafka_bootstrap, store_url):
    tag = uuid.uuid4().hex[:10]
    topic, group = f"adm-{tag}", f"gateway-{tag}"
    bus = KafkaBus(kafka_bootstrap)
    bus.ensure_topics([topic], partitions=6)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CTLOOP_HOME": str(tmp_path), "CTLOOP_BUS": "kafka",
           "CTLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap, "CTLOOP_TOPICS__ADMISSION": topic,
           "CTLOOP_TOPICS__DEADLETTER": f"dead-{tag}", "CTLOOP_GATEWAY_STORE_URL": store_url}
    ledger = tmp_path / "ledger.db"
    LedgerEngine(ledger).close()
    replicas = [subprocess.Popen([sys.executable, "-m", "tests.sensors.gateway.gateway_process", str(ledger), group,
                                  name], env=env, cwd=REPO) for name in ("a", "b")]
    observer = GatewayStore(store_url, "observer")
    wait_for("both replicas to own partitions", lambda: set(observer.owners().values()) == {"a", "b"}
             and len(observer.owners()) == 6)
    rng = random.Random(15)
    published: list[tuple[str, str, str]] = []
    newest: dict[str, str] = {}
    try:
        for n in range(600):
            if published and n % 10 == 9:  # a redelivered event, or a new event for a model's newest data
                model, digest, event_id = rng.choice(published)
                if rng.random() < 0.5:
                    digest, event_id = newest[model], f"again-{n}"
            else:
                model, digest, event_id = f"m{rng.randrange(40)}", f"d{n}", f"e{n}"
                newest[model] = digest
            published.append((model, digest, event_id))
            bus.publish(topic, request(model, digest, event_id), key=model)
            if n == 300:
                bus.flush()
                wait_for("decisions from both replicas",
                         lambda: {d.replica for d in observer.decisions()} >= {"a", "b"})
                replicas[0].send_signal(signal.SIGKILL)
                replicas[0].wait(timeout=30)
        bus.flush()
        ids = {event_id for _, _, event_id in published}
        wait_for("a decision on every event", lambda: ids <= {d.event_id for d in observer.decisions()})
        engine = LedgerEngine(ledger)

        def not_run() -> dict[str, list[str]]:
            ran = {(r["model"], r["data_uri"]) for r in engine.runs()}
            return {m: [f"{x.event_id} {x.kind} {x.reason}" for x in observer.decisions(model=m)][-4:]
                    for m, d in newest.items() if (m, f"file:///data/{m}/{d}") not in ran}

        deadline = time.monotonic() + 60
        while not_run() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not_run() == {}, "the newest data of these models never ran"
        assert engine.duplicate_runs() == {}, "a data/code pair ran twice"
        late = [d for d in observer.decisions() if d.replica == "a" and d.at > time.time()]
        assert late == []
        assert {d.replica for d in observer.decisions()} == {"a", "b"}
        assert set(observer.owners().values()) == {"b"}, "b took over a's partitions"
        engine.close()
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
                replica.wait(timeout=30)
        observer.close()
        bus.close()

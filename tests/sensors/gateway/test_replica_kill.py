"""A gateway replica SIGKILLed mid-stream: the other takes its partitions, nothing is lost, nothing runs twice.
Real broker, replicas as processes, their shared store on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from ctloop.kafka_bus import KafkaBus
from tests.sensors.gateway.helpers import request
from tests.sensors.gateway.replicas import Replicas
from tests.sensors.ledger import LedgerEngine

pytestmark = pytest.mark.kafka


def wait_for(what, predicate, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_replicas_partitions_move_to_the_other_and_nothing_is_lost_or_run_twice(
        tmp_path, kafka_bootstrap, store_url):
    tag = uuid.uuid4().hex[:10]
    topic = f"adm-{tag}"
    bus = KafkaBus(kafka_bootstrap)
    bus.ensure_topics([topic], partitions=6)
    ledger = tmp_path / "ledger.db"
    LedgerEngine(ledger).close()
    rng = random.Random(15)
    published: list[tuple[str, str, str]] = []
    newest: dict[str, str] = {}
    with Replicas(["a", "b"], group=f"gateway-{tag}", bootstrap=kafka_bootstrap, topic=topic, store_url=store_url,
                  home=tmp_path, engine=["--ledger", str(ledger)],
                  env={"CTLOOP_TOPICS__DEADLETTER": f"dead-{tag}"}) as replicas:
        observer = replicas.observer
        replicas.wait_shared(partitions=6, timeout_s=90)
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
                replicas.kill("a")
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
    bus.close()

"""The admission gateway at cluster scale on one machine: several `Gateway` processes in one consumer group on a
partitioned admission topic, their state in PostgreSQL, 10,000 models, a paced stream of admission requests,
one replica SIGKILLed halfway in the last configuration.

Run: $V/bin/python bench/gateway.py [--events 20000] [--rate 1000] [--models 10000] [--partitions 12]
     [--replicas 1,3] [--bootstrap H:P] [--store-url URL]

Without --bootstrap it starts a local single-node Kafka (as the tests do); without --store-url a PostgreSQL
server in a temp dir (`ctloop.postgres_local`, as the tests' fixture does, with fsync on). Each replica
(`tests/sensors/gateway/gateway_process.py`, started by the kill test's `Replicas`) runs exactly as
`ctloop gateway run` wires it except the engine: one that accepts every run at once, so the figures are the
gateway's cost, not a workflow's.
Decision latency is the first decision's store timestamp minus the request's publish time (same clock).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from ctloop.postgres_local import local_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' replica processes


def one_run(args, bootstrap: str, store_url: str, replicas: int, kill: bool) -> dict:
    import sqlalchemy as sa

    from ctloop.kafka_bus import KafkaBus
    from ctloop.sensors.gateway.store import metadata
    from tests.sensors.gateway.replicas import Replicas

    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-adm-{tag}", f"bench-gateway-{tag}"
    engine = sa.create_engine(store_url)
    metadata.drop_all(engine)
    engine.dispose()
    bus = KafkaBus(bootstrap, connect_timeout_s=30)
    bus.ensure_topics([topic], partitions=args.partitions)
    home = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    names = [f"r{i}" for i in range(replicas)]
    fleet = Replicas(names, group=group, bootstrap=bootstrap, topic=topic, store_url=store_url, home=home,
                     engine=["--instant", "--batch-size", "1000", "--status-interval", "0.5"])
    fleet.wait_shared(args.partitions)
    rng = random.Random(15)
    sent: dict[str, float] = {}
    start = time.time()
    killed_at = None
    for n in range(args.events):
        time.sleep(max(0.0, start + n / args.rate - time.time()))
        model = f"model-{rng.randrange(args.models):05d}"
        event_id = f"e{n}"
        payload = {"model": model, "data-uri": f"s3://b/{model}/{n}", "event-id": event_id, "trigger": "data",
                   "idempotency-key": f"{model}-{n}", "gpu": "false"}
        sent[event_id] = time.time()
        bus.publish(topic, json.dumps(payload).encode(), key=model)
        if kill and n == args.events // 2:
            fleet.kill(names[0])
            killed_at = time.time()
    bus.flush()
    published = time.time()
    with sa.create_engine(store_url).connect() as db:
        query = sa.text("SELECT event_id, MIN(at) FROM gateway_decisions GROUP BY event_id")
        deadline = time.monotonic() + 180
        while True:
            first = dict(db.execute(query).all())
            if len(first) >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        triggered = Counter(k for (k,) in db.execute(sa.text(
            "SELECT key FROM gateway_decisions WHERE kind = 'triggered'")))
    fleet.close()
    bus.close()
    shutil.rmtree(home, ignore_errors=True)
    latencies = sorted((first[e] - t) * 1000 for e, t in sent.items() if e in first)
    done = max(first.values()) if first else published
    after_kill = sorted((first[e] - t) * 1000 for e, t in sent.items() if e in first and killed_at
                        and t >= killed_at)
    return {
        "replicas": replicas, "killed": kill, "events": len(sent), "decided": len(first),
        "offered_per_s": round(len(sent) / (published - start)), "decided_per_s": round(len(first) / (done - start)),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[int(len(latencies) * 0.95)], 1), "latency_ms_max": round(latencies[-1], 1),
        "after_kill_ms_max": round(after_kill[-1], 1) if after_kill else None,
        "keys_triggered_twice": sum(1 for c in triggered.values() if c > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--models", type=int, default=10000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--replicas", default="1,3")
    parser.add_argument("--bootstrap")
    parser.add_argument("--store-url")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        bootstrap = args.bootstrap
        if bootstrap is None:
            from ctloop.kafka_local import LocalKafka

            kafka = LocalKafka(root / "kafka")
            kafka.start()
            stack.callback(kafka.stop)
            bootstrap = kafka.bootstrap
        store_url = args.store_url or stack.enter_context(local_postgres())
        counts = [int(r) for r in args.replicas.split(",")]
        runs = [(r, False) for r in counts] + [(counts[-1], True)]
        for replicas, kill in runs:
            print(json.dumps(one_run(args, bootstrap, store_url, replicas, kill)), flush=True)

if __name__ == "__main__":
    main()

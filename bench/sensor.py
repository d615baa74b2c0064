"""LocalSensor on a real Kafka broker: event->trigger latency at a steady rate, and throughput against a raw
kafka-python consumer reading the same topic in the same run.

Run: $V/bin/python bench/sensor.py [--events 20000] [--rate 200] [--seconds 10] [--reps 3] [--bootstrap H:P]

Without --bootstrap it starts a local single-node Kafka (KRaft, as the tests do) in a temp dir.
The sensor runs exactly as `ctloop sensor run` wires it (parse, filters, mapping, admission, decisions
durable in SQLite before each offset commit) except the engine: a counter at the engine boundary, so
the figures are the sensor's own cost, not a workflow's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import pstats
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import kafka_sensors
from ctloop.sensors.local.decisions import list_decisions
from ctloop.sensors.local.sensor import LocalSensor
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from ctloop.workflows.arguments import run_key
from ctloop.workflows.engine import AlreadyRan, RunHandle, RunRequest, RunStatus


class CountingEngine:
    """Accepts each key once, instantly; counts submits."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.submitted: dict[str, float] = {}

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        key = run_key(request)
        if key in self.keys:
            raise AlreadyRan(key, self.keys[key])
        self.keys[key] = f"run-{len(self.keys)}"
        self.submitted[request.trigger_event_id or key] = time.time()
        return RunHandle(run_id=self.keys[key], idempotency_key=key, status="Succeeded")

    def status(self, run_id: str) -> RunStatus:
        return "Succeeded"


def publish(bus: KafkaBus, topic: str, count: int, models: int, tag: str) -> None:
    for n in range(count):
        model = f"m{n % models}"
        event = new_event(DataArrived(model=model, uri=f"s3://bench/{tag}/{n}", digest=f"{tag}-{n}"))
        bus.publish(topic, to_bytes(event), key=model)
    bus.flush(timeout_s=120)


def raw_rate(bootstrap: str, topic: str, count: int) -> float:
    """Messages/s of a bare KafkaConsumer, from its first record to the last."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest")
    seen, start = 0, None
    while seen < count:
        batches = consumer.poll(timeout_ms=500, max_records=500)
        got = sum(len(records) for records in batches.values())
        if got and start is None:
            start = time.perf_counter()
        seen += got
    elapsed = time.perf_counter() - start
    consumer.close(autocommit=False)
    return count / elapsed


def make_sensor(home: Path, bus: KafkaBus, topics: Topics, engine: CountingEngine,
                group: str) -> tuple[LocalSensor, Settings]:
    settings = Settings(home=home, bus="kafka", kafka_bootstrap=bus.bootstrap, topics=topics)
    sensor = LocalSensor(settings, bus, engine, kafka_sensors(settings, code_version()), group=group,
                         policy=AdmissionPolicy(window_s=0))
    return sensor, settings


def sensor_rate(root: Path, bus: KafkaBus, topics: Topics, count: int) -> tuple[float, int]:
    """Messages/s through LocalSensor (decided, recorded, committed), from its first record to the last."""
    engine = CountingEngine()
    sensor, _ = make_sensor(root / uuid.uuid4().hex[:8], bus, topics, engine, f"sensor-{uuid.uuid4().hex[:8]}")
    seen, start = 0, None
    while seen < count:
        got = sensor.step(0.5)
        if got and start is None:
            start = time.perf_counter()
        seen += got
    elapsed = time.perf_counter() - start
    sensor.close()
    return count / elapsed, len(engine.keys)


class StampingConsumer:
    """Wraps the sensor's consumer to note when each event left `poll`, for the in-sensor latency."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.arrived: dict[str, float] = {}

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list:
        messages = self.inner.poll(timeout_s=timeout_s, max_records=max_records)
        now = time.time()
        for m in messages:
            self.arrived[json.loads(m.value)["id"]] = now
        return messages

    def commit(self, message: Any) -> None:
        self.inner.commit(message)

    def close(self) -> None:
        self.inner.close()


def raw_delivery(bootstrap: str, topic: str, total: int, ready: Any, out: str) -> None:
    """A bare KafkaConsumer on the same steady stream: producer timestamp to record in hand, in ms."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"rawlat-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="latest")
    while not consumer.assignment():
        consumer.poll(timeout_ms=100)
    consumer.seek_to_end()
    consumer.position(next(iter(consumer.assignment())))
    ready.set()
    delays: list[float] = []
    deadline = time.monotonic() + 120
    while len(delays) < total and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100, max_records=500).values():
            now = time.time() * 1000
            delays.extend(now - r.timestamp for r in records)
    consumer.close(autocommit=False)
    Path(out).write_text(json.dumps(delays))


def latency(root: Path, bus: KafkaBus, rate: float, seconds: float) -> dict[str, list[float]]:
    """For events published at `rate`/s (producer in its own process): producer timestamp to run submitted
    (`sensor`), poll return to run submitted (`inside`), and a raw consumer's producer-to-poll (`raw`), in ms."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(data=f"bench-lat-{tag}", drift=f"bench-lat-drift-{tag}", deadletter=f"bench-dead-{tag}")
    bus.ensure_topics([topics.data, topics.drift, topics.deadletter])
    engine = CountingEngine()
    sensor, settings = make_sensor(root / f"lat-{tag}", bus, topics, engine, f"lat-{tag}")
    stamping = StampingConsumer(sensor._consumer)
    sensor._consumer = stamping
    stop = threading.Event()
    thread = threading.Thread(target=sensor.run, args=(stop.is_set, 0.05))
    thread.start()
    publish(bus, topics.data, 1, 1, f"warm-{tag}")
    while not engine.keys:
        time.sleep(0.05)
    total = int(rate * seconds)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    raw_out = root / f"raw-{tag}.json"
    raw = ctx.Process(target=raw_delivery, args=(bus.bootstrap, topics.data, total, ready, str(raw_out)))
    raw.start()
    ready.wait(60)
    # The producer runs in its own process so that it does not share the sensor's GIL.
    producer = ctx.Process(target=produce_steadily, args=(bus.bootstrap, topics.data, tag, total, rate))
    producer.start()
    producer.join()
    raw.join()
    deadline = time.monotonic() + 30
    while len(engine.keys) < total + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join()
    sensor.close()
    rows = list_decisions(settings.state_db, limit=total * 2)
    end_to_end = [r.latency_ms for r in rows if r.kind == "triggered" and r.latency_ms is not None
                  and not r.event_id.startswith("warm")]
    inside = [(engine.submitted[e] - stamping.arrived[e]) * 1000 for e in engine.submitted if e in stamping.arrived]
    return {"sensor": end_to_end[:total], "inside": inside[1:], "raw": json.loads(raw_out.read_text())}


def produce_steadily(bootstrap: str, topic: str, tag: str, total: int, rate: float) -> None:
    bus = KafkaBus(bootstrap, client_id="bench-producer")
    start = time.perf_counter()
    for n in range(total):
        model = f"m{n % 50}"
        event = new_event(DataArrived(model=model, uri=f"s3://bench/{tag}/{n}", digest=f"{tag}-{n}"))
        bus.publish(topic, to_bytes(event), key=model)
        bus.flush()
        delay = start + (n + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    bus.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the figures, print cProfile's top N functions of one more sensor pass")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        root = Path(tmp)
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            from ctloop.kafka_local import LocalKafka

            broker = LocalKafka(root / "kafka")
            broker.start()
            bootstrap = broker.bootstrap
        bus = KafkaBus(bootstrap, client_id="bench")
        try:
            tag = uuid.uuid4().hex[:8]
            topics = Topics(data=f"bench-{tag}", drift=f"bench-drift-{tag}", deadletter=f"bench-dead-{tag}")
            bus.ensure_topics([topics.data, topics.drift, topics.deadletter])
            publish(bus, topics.data, args.events, args.models, tag)
            raw, ours, runs = [], [], 0
            for _ in range(args.reps):
                raw.append(raw_rate(bootstrap, topics.data, args.events))
                rate, runs = sensor_rate(root, bus, topics, args.events)
                ours.append(rate)
            lat = latency(root, bus, args.rate, args.seconds)
            if args.profile:
                profile = cProfile.Profile()
                profile.runcall(sensor_rate, root, bus, topics, args.events)
                profiled = io.StringIO()
                pstats.Stats(profile, stream=profiled).sort_stats("tottime").print_stats(args.profile)
        finally:
            bus.close()
            if broker is not None:
                broker.stop()

    raw_median, ours_median = statistics.median(raw), statistics.median(ours)
    print(f"throughput, {args.events} DataArrived events, {args.models} models, median of {args.reps}:")
    print(f"  raw kafka-python consumer : {raw_median:10.0f} msg/s  {[round(r) for r in raw]}")
    print(f"  LocalSensor               : {ours_median:10.0f} msg/s  {[round(r) for r in ours]}"
          f"  ({runs} runs started per pass)")
    print(f"  ratio sensor/raw          : {ours_median / raw_median:10.2f}  (goal >= 0.8)")
    print(f"latency at a steady {args.rate:g} ev/s for {args.seconds:g}s (producer in its own process), ms:")
    for name, label in (("sensor", "event -> run submitted (sensor)"), ("raw", "event -> record polled (raw)"),
                        ("inside", "polled -> run submitted (sensor)")):
        values = lat[name]
        print(f"  {label:<34}: p50 {percentile(values, 0.5):7.2f}  p99 {percentile(values, 0.99):7.2f}"
              f"  max {max(values):7.2f}  (n={len(values)})")
    print("  goal: sensor p99 <= 25 ms; Argo Events takes ~1-4 s from Kafka to trigger (argo-events #3984)")
    if args.profile:
        print(f"profile of one sensor pass over {args.events} events (cProfile, by own time):")
        print(profiled.getvalue())


if __name__ == "__main__":
    main()

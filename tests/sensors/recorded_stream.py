"""A recorded stream of mixed sensor input, replayed through `LocalSensor` with a deterministic clock and
engine, and the decisions it produced reduced to a compact, comparable digest.

The digests in `data/recorded_decisions.json` were produced by the per-event sensor (before batch
admission, commit 8e66572) with `python -m tests.sensors.recorded_stream --record`; a test replays the
same stream through today's sensor and compares. Every event is generated from a seed: arrivals for
50 models (new, repeated and missing digests, GPU runs), drift verdicts that pass or fail the filters,
other event types, redeliveries, ids reused with another body, and malformed messages of every kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctloop.bus import Headers, Message, as_key
from ctloop.deadletter import reason_of
from ctloop.events import DataArrived, DriftDetected, ModelPromoted, new_event, to_bytes
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import kafka_sensors
from ctloop.sensors.local.decisions import DecisionLog
from ctloop.sensors.local.sensor import LocalSensor
from ctloop.settings import Settings, Topics
from ctloop.workflows.arguments import run_key
from ctloop.workflows.engine import AlreadyRan, RunHandle, RunRequest, RunStatus

FIXTURE = Path(__file__).parent / "data" / "recorded_decisions.json"
CODE_VERSION = "recorded-stream"
TOPICS = Topics(data="rec.data", drift="rec.drift", deadletter="rec.dead")
MAX_EVENT_BYTES = 4096
SECONDS_PER_MESSAGE = 0.01  # the replay clock: 100 messages per simulated second
CHUNK = 1000
GAP_EVERY = 2000  # messages between quiet polls
T0 = datetime(2026, 11, 1, tzinfo=UTC)
# The event types ctloop knew when the fixture was recorded (an unknown type's dead-letter reason lists them).
RECORDED_TYPES = ("ctloop.data.arrived", "ctloop.drift.detected", "ctloop.model.promoted", "ctloop.model.rolled_back",
                  "ctloop.run.finished")

SCENARIOS: dict[str, AdmissionPolicy] = {
    # A backlog decided as fast as it comes: every model's newest arrival queued behind its run.
    "immediate": AdmissionPolicy(window_s=0, drift_cooldown_s=60, max_gpu_runs=1),
    # Coalescing windows of 2 simulated seconds, drift cooldowns, and a cap of one GPU run.
    "windowed": AdmissionPolicy(window_s=2, drift_cooldown_s=60, max_gpu_runs=1),
}


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None


def generate(seed: int = 17, count: int = 100_000, models: int = 50) -> list[Record]:
    """`count` messages for `models` models, mixed as a busy day with an outage might mix them."""
    rng = random.Random(seed)
    out: list[Record] = []
    digests: dict[str, list[str]] = defaultdict(list)
    ids: list[str] = []
    for n in range(count):
        at = T0 + timedelta(seconds=n * SECONDS_PER_MESSAGE)
        # A few hot models get most of the traffic, as a bulk upload would.
        model = f"m{min(int(rng.paretovariate(1.2)) - 1, models - 1)}" if rng.random() < 0.5 \
            else f"m{rng.randrange(models)}"
        roll = rng.random()
        if roll < 0.60:
            out.append(_arrival(rng, n, at, model, digests))
            ids.append(f"a{n}")
        elif roll < 0.70 and out:
            out.append(out[rng.randrange(max(0, len(out) - 2000), len(out))])  # redelivery
        elif roll < 0.72 and ids:
            # A producer that reuses an event id for another body.
            payload = DataArrived(model=model, uri=f"s3://d/{model}/reused-{n}", digest=f"r{n}")
            out.append(_record(TOPICS.data, to_bytes(new_event(payload, id=rng.choice(ids), time=at)), model))
        elif roll < 0.84:
            out.append(_drift(rng, n, at, model))
        elif roll < 0.86:
            payload = ModelPromoted(model=model, version="3", actor="me", reason="manual")
            out.append(_record(TOPICS.data, to_bytes(new_event(payload, id=f"p{n}", time=at)), model))
        else:
            out.append(Record(rng.choice((TOPICS.data, TOPICS.drift)), _malformed(rng, n, model), None))
    return out


def _record(topic: str, value: bytes, key: str | None) -> Record:
    return Record(topic, value, as_key(key))


def _arrival(rng: random.Random, n: int, at: datetime, model: str, digests: dict[str, list[str]]) -> Record:
    roll = rng.random()
    known = digests[model]
    if roll < 0.10 and known:
        digest: str | None = rng.choice(known[-20:])  # the same data again: the same key
    elif roll < 0.16:
        digest = None  # resolved by snapshotting the URI (which may be gone)
    else:
        digest = f"d{n:07d}"
        known.append(digest)
    uri = f"s3://d/{model}/{'gone' if rng.random() < 0.1 else 'part'}-{n}"
    payload = DataArrived(model=model, uri=uri, digest=digest, size=rng.randrange(10**6),
                          gpu=rng.random() < 0.05)
    return _record(TOPICS.data, to_bytes(new_event(payload, id=f"a{n}", time=at)), model)


def _drift(rng: random.Random, n: int, at: datetime, model: str) -> Record:
    roll = rng.random()
    payload = DriftDetected(
        model=model, window_start=at - timedelta(minutes=5), window_end=at, rows=0 if roll < 0.1 else 500,
        drifted_share=0.4, dataset_drift=roll >= 0.2, columns={},
        data_uri=None if 0.2 <= roll < 0.3 else f"s3://labels/{model}/{n}")
    return _record(TOPICS.drift, to_bytes(new_event(payload, id=f"dr{n}", time=at)), model)


def _malformed(rng: random.Random, n: int, model: str) -> bytes:
    base = {"specversion": "1.0", "id": f"bad{n}", "type": "ctloop.data.arrived", "source": "urn:test",
            "time": "2026-11-01T00:00:00Z", "data": {"model": model, "uri": f"s3://d/{model}/{n}"}}
    kind = rng.randrange(12)
    if kind == 0:
        return b"{not json"
    if kind == 1:
        return b"[1, 2, 3]"
    if kind == 2:
        return b"\xff\xfe\x00garbage"
    if kind == 3:
        return b"x" * (MAX_EVENT_BYTES + 1)
    if kind == 4:
        del base["id"]
    elif kind == 5:
        base["specversion"] = "0.3"
    elif kind == 6:
        base["type"] = "ctloop.unknown"
    elif kind == 7:
        base["data"] = {"model": "", "uri": "s3://x"}
    elif kind == 8:
        base["data"] = {"model": model, "uri": "s3://x", "colour": "red"}
    elif kind == 9:
        base["time"] = 12345
    elif kind == 10:
        base["time"] = "yesterday"
    else:
        del base["data"]
    return json.dumps(base).encode()


class ReplayBus:
    """The recorded stream as a bus: consumers replay it in order, with commits; publishes (dead letters)
    are kept in order."""

    def __init__(self, records: Sequence[Record], clock: ReplayClock) -> None:
        self.records = records
        self.clock = clock
        self.published: list[Message] = []
        self.consumers: list[ReplayConsumer] = []

    def publish(self, topic: str, value: bytes, *, key: str | bytes | None = None, headers: Headers = ()) -> None:
        self.published.append(Message(topic, 0, len(self.published), as_key(key), bytes(value), tuple(headers)))

    def flush(self, timeout_s: float = 10.0) -> None:
        """Publishes are kept in memory: nothing to wait for."""

    def consumer(self, topics: Sequence[str], group: str) -> ReplayConsumer:
        self.consumers.append(ReplayConsumer(self))
        return self.consumers[-1]

    def drained(self) -> bool:
        return all(c.position >= len(self.records) for c in self.consumers)

    def close(self) -> None:
        """Nothing to release."""


class ReplayConsumer:
    def __init__(self, bus: ReplayBus) -> None:
        self.bus = bus
        self.position = 0
        self.gapped: set[int] = set()

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        if self.position % GAP_EVERY < max_records and self.position not in self.gapped:
            # A quiet moment now and then, when the sensor checks its runs and closes windows.
            self.gapped.add(self.position)
            return []
        start, end = self.position, min(len(self.bus.records), self.position + max_records)
        self.position = end
        self.bus.clock.now = _clock_at(end)
        return [Message(r.topic, 0, start + i, r.key, r.value, (), int(_clock_at(start + i) * 1000))
                for i, r in enumerate(self.bus.records[start:end])]

    def commit(self, message: Message) -> None:
        """Nothing to persist: the replay does not restart."""

    def close(self) -> None:
        """Nothing to release."""


def _clock_at(position: int) -> float:
    return T0.timestamp() + position * SECONDS_PER_MESSAGE


@dataclass
class ReplayClock:
    now: float = field(default_factory=lambda: T0.timestamp())

    def __call__(self) -> float:
        return self.now


class ReplayEngine:
    """Accepts each key once; a run lasts 0-6 simulated seconds (from its event id) and one in seven fails."""

    def __init__(self, clock: ReplayClock) -> None:
        self.clock = clock
        self.holders: dict[str, str] = {}
        self.runs: dict[str, tuple[float, RunStatus, RunRequest]] = {}

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        key = run_key(request)
        if key in self.holders:
            raise AlreadyRan(key, self.holders[key])
        run_id = f"run-{request.trigger_event_id}"
        spin = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
        self.holders[key] = run_id
        self.runs[run_id] = (self.clock() + spin % 600 / 100, "Failed" if spin % 7 == 0 else "Succeeded", request)
        return RunHandle(run_id=run_id, idempotency_key=key, status="Running" if spin % 600 else "Succeeded")

    def status(self, run_id: str) -> RunStatus:
        ends, final, _ = self.runs[run_id]
        return final if self.clock() >= ends else "Running"


def resolve_digest(uri: str) -> str:
    """A snapshot of the URI: named by its content, unless the data has gone."""
    if "/gone-" in uri:
        raise ValueError(f"no data objects under {uri}")
    return "snap-" + hashlib.sha256(uri.encode()).hexdigest()[:16]


def replay(records: Sequence[Record], policy: AdmissionPolicy, home: Path,
           recent_events: int | None = None) -> dict[str, Any]:
    """Replay `records` through a fresh sensor, drain it, and reduce what it decided to digests. `recent_events`:
    the sensor's bound on the ids it keeps to know a producer's duplicate (None: its default)."""
    clock = ReplayClock()
    bus = ReplayBus(records, clock)
    engine = ReplayEngine(clock)
    settings = Settings(home=home, topics=TOPICS, max_event_bytes=MAX_EVENT_BYTES)
    bound = {} if recent_events is None else {"recent_events": recent_events}
    sensor = LocalSensor(settings, bus, engine, kafka_sensors(settings, CODE_VERSION), policy=policy,
                         resolve_digest=resolve_digest, clock=clock, commit_interval_s=0.0, **bound)
    wall, cpu = time.perf_counter(), time.process_time()
    while not bus.drained():
        sensor.step(0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # Let open windows close, runs finish and queued runs start.
    for _ in range(200):
        clock.now += 0.5
        sensor.step(0)
    sensor.close()
    return {**summarize(records, bus, engine, settings), "drain_s": wall, "drain_cpu_s": cpu}


def summarize(records: Sequence[Record], bus: ReplayBus, engine: ReplayEngine, settings: Settings) -> dict[str, Any]:
    """Per chunk of `CHUNK` messages, a digest of what was decided about the events first seen there."""
    first_seen: dict[str, int] = {}
    for n, record in enumerate(records):
        try:
            event_id = json.loads(record.value)["id"]
        except (ValueError, KeyError, TypeError):
            continue
        first_seen.setdefault(str(event_id), n)
    lines: dict[int, list[str]] = defaultdict(list)
    log = DecisionLog(settings.state_db, "ctloop-sensor")
    per_event: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for d in log.decisions():
        per_event[d.event_id].append(json.dumps([d.kind, d.model, d.reason, d.key, d.run_id]))
        counts[d.kind] += 1
    log.close()
    for event_id, decided in per_event.items():
        lines[first_seen[event_id] // CHUNK].append(json.dumps([event_id, decided]))
    for message in bus.published:
        offset = int(message.header("ctloop.origin.offset") or b"-1")
        lines[offset // CHUNK].append(json.dumps(["dead", offset, _as_recorded(reason_of(message))]))
        counts["dead-lettered"] += 1
    for run_id, (_, final, request) in sorted(engine.runs.items()):
        data = [run_id, request.model, request.data_uri, request.data_digest, request.trigger, request.gpu, final]
        lines[first_seen[request.trigger_event_id or ""] // CHUNK].append(json.dumps(["run", data]))
        counts["runs"] += 1
    chunks = [hashlib.sha256("\n".join(sorted(lines.get(c, []))).encode()).hexdigest()[:16]
              for c in range((len(records) + CHUNK - 1) // CHUNK)]
    return {"counts": dict(sorted(counts.items())), "chunks": chunks, "lines": lines}


def _as_recorded(reason: str | None) -> str | None:
    """A dead letter's reason as the fixture has it: an unknown type's reason lists the types ctloop knows,
    and the fixture was recorded before the label and quality events existed."""
    unknown, known, _ = (reason or "").partition(" (known: ")
    return f"{unknown} (known: {', '.join(RECORDED_TYPES)})" if known else reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {FIXTURE.name}")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append",
                        help="replay only these scenarios (default: all)")
    parser.add_argument("--recent-events", type=int, default=None,
                        help="the sensor's bound on recent ids (default: LocalSensor's)")
    args = parser.parse_args()
    import tempfile

    logging.getLogger("ctloop.sensor").setLevel(logging.ERROR)
    records = generate(args.seed, args.events)
    out: dict[str, Any] = {"seed": args.seed, "events": args.events, "scenarios": {}}
    for name in args.scenario or SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            result = replay(records, SCENARIOS[name], Path(tmp), args.recent_events)
        out["scenarios"][name] = {"counts": result["counts"], "chunks": result["chunks"]}
        whole = hashlib.sha256("".join(result["chunks"]).encode()).hexdigest()[:16]
        print(f"{name}: {result['counts']}, digest {whole}; drained in {result['drain_s']:.1f} s "
              f"({result['drain_cpu_s']:.1f} CPU s)")
    if args.record:
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The sensor's per-event cost without a broker: N arrivals for M models (every digest new, as in
`bench/sensor.py`'s throughput pass) fed from a list through `LocalSensor` as `ctloop sensor run` assembles
it, decided, recorded in SQLite and committed; JSON logs at INFO into /dev/null; the GC tuned as that
command tunes it (`--default-gc`: Python's defaults).

Run: $V/bin/python bench/sensor_decide.py [--events 20000] [--models 50] [--reps 3] [--batch 500]
     $V/bin/python bench/sensor_decide.py --by-phase          CPU µs per event by phase (one pass)
     py-spy record -r 250 -f raw -o out.txt -- $V/bin/python bench/sensor_decide.py --reps 1
     $V/bin/python bench/sensor_decide.py --phases out.txt    shares of the samples by phase
     $V/bin/python bench/sensor_decide.py --lookup --events 500000   `ctloop events list` on the log it leaves

`--by-phase` wraps each phase's function in the sensor's modules with the thread's CPU clock (which other
tenants of a shared host do not advance); the wrappers add ~0.3 µs a call, about 2 µs an event in all.

Prints the median µs of CPU (and wall) per event over the repetitions, each on a fresh home.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctloop.bus import Headers, Message, as_key
from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local import jsonlog
from ctloop.sensors.local.assembly import local_sensor
from ctloop.settings import Settings, Topics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the Kafka bench's engine
from bench.sensor import CountingEngine

TOPICS = Topics(data="decide.data", drift="decide.drift", deadletter="decide.dead")

# Frames (substrings of py-spy's "function (file:line)") that name a phase, first match from the top of a
# stack's innermost end; a sample in none of them is "other" (the loop itself, the harness).
PHASES = (
    ("parse + validate (+ content digest)", ("parse_brief", "parse_document", "content_digest")),
    ("SQLite (decision log)", ("decisions.py",)),
    ("route (filters, mapping, candidate)", ("filters.py", "mapping.py", "route.py", "_candidate", "kafka_event_data",
                                             "_routed")),
    ("admission", ("admission.py",)),
    ("launch (tick, submit)", ("_launch", "_submit", "submit (")),
    ("metrics + logs", ("_observe", "jsonlog")),
    ("commit", ("commit (",)),
)


class ListBus:
    """A fixed list of messages as a bus: one consumer reads it in order; publishes are dropped."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.position = 0

    def publish(self, topic: str, value: bytes, *, key: str | bytes | None = None, headers: Headers = ()) -> None:
        """Dead letters: none in this stream."""

    def flush(self, timeout_s: float = 10.0) -> None:
        """Nothing is buffered."""

    def consumer(self, topics: list[str], group: str) -> ListBus:
        return self

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Message]:
        start = self.position
        self.position = min(len(self.messages), start + max_records)
        return self.messages[start:self.position]

    def commit(self, message: Message) -> None:
        """Offsets live in the list position."""

    def close(self) -> None:
        """Nothing to release."""


def arrivals(count: int, models: int) -> list[Message]:
    out = []
    now_ms = int(time.time() * 1000)
    for n in range(count):
        model = f"m{n % models}"
        event = new_event(DataArrived(model=model, uri=f"s3://bench/t/{n}", digest=f"t-{n}"))
        out.append(Message(TOPICS.data, n % 3, n, as_key(model), to_bytes(event), (), now_ms))
    return out


def one_pass(messages: list[Message], home: Path, batch: int) -> tuple[float, float, int]:
    """CPU and wall seconds to decide, record and commit every message; the runs started."""
    engine = CountingEngine()
    bus = ListBus(messages)
    settings = Settings(home=home, topics=TOPICS)
    sensor = local_sensor(settings, bus, engine, policy=AdmissionPolicy(window_s=0), batch_size=batch)
    wall, cpu = time.perf_counter(), time.process_time()
    while bus.position < len(messages):
        sensor.step(0)
    sensor.close()
    return time.process_time() - cpu, time.perf_counter() - wall, len(engine.keys)


def by_phase(messages: list[Message], home: Path, batch: int) -> dict[str, float]:
    """CPU seconds spent in each phase of one pass (`one_pass` with the phases' functions wrapped)."""
    import ctloop.sensors.local.decisions as decisions
    import ctloop.sensors.local.route as route
    import ctloop.sensors.local.sensor as sensor

    spent: Counter[str] = Counter()
    clock = time.thread_time

    def timed(function: Any, phase: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[phase] += clock() - start

        return wrapper

    for owner, name, phase in (
        (sensor, "parse_brief", "parse + validate (+ content digest)"),
        (sensor, "admit_all", "admission"), (sensor.LocalSensor, "_launch", "launch (tick, submit)"),
        (sensor.LocalSensor, "_observe", "metrics + logs"),
        (sensor.LocalSensor, "_routed", "route (filters, mapping, candidate)"),
        (sensor.LocalSensor, "_candidate", "route (filters, mapping, candidate)"),
        (sensor.LocalSensor, "step", "total"),
        *((decisions.DecisionLog, name, "SQLite") for name in (
            "seen_digests", "watermarks", "advance", "ran", "record", "mark_seen", "record_rejections", "save_state")
          if hasattr(decisions.DecisionLog, name)),
    ):
        if hasattr(owner, name):
            setattr(owner, name, timed(getattr(owner, name), phase))
    # The body route's `decide`, which the sensor's loop calls itself for the first route of a topic.
    make_route = route.Route.of

    def timed_route(spec: Any) -> Any:
        made = make_route(spec)
        return made if made.decide is None else dataclasses.replace(
            made, decide=timed(made.decide, "route (filters, mapping, candidate)"))

    route.Route.of = staticmethod(timed_route)
    execute = decisions.DecisionLog.transaction.__wrapped__

    @contextmanager
    def transaction(self: Any, *, durable: bool = True) -> Any:
        # BEGIN and COMMIT (the pages written) count as SQLite, not what runs inside.
        start = clock()
        inner = execute(self, durable=durable)
        next(inner)
        spent["SQLite"] += clock() - start
        try:
            yield
        except BaseException as exc:
            inner.throw(exc)
            raise
        start = clock()
        next(inner, None)
        spent["SQLite"] += clock() - start

    decisions.DecisionLog.transaction = transaction
    one_pass(messages, home, batch)
    spent["other"] = spent["total"] - sum(v for k, v in spent.items() if k != "total")
    return dict(spent)


def lookup(messages: list[Message], home: Path, batch: int, models: int) -> None:
    """Decide `messages` into one log, then time what `ctloop events list` and `DecisionLog.decisions()` read
    from it: an event in a burst row, one in a row of its own, a prefix, every decision."""
    from ctloop.sensors.local.decisions import DecisionLog, list_decisions

    if 2 * models > batch:
        raise SystemExit("--lookup wants a batch holding two arrivals of each model")
    one_pass(messages, home, batch)
    state_db = Settings(home=home, topics=TOPICS).state_db
    log = DecisionLog(state_db, "ctloop-sensor")
    start = time.perf_counter()
    total = sum(1 for _ in log.decisions())
    print(f"{total} decisions; DecisionLog.decisions() reads them all in {time.perf_counter() - start:.2f} s")
    log.close()
    # A model's second arrival in a batch is coalesced into the newest: held in that batch's burst row.
    member = models
    for label, kwargs in (("--event (in a burst row, the oldest)", {"event_id": _id(messages[member])}),
                          ("--event (in a burst row, the middle)",
                           {"event_id": _id(messages[len(messages) // 2 + member])}),
                          ("--event (its own row, the newest)", {"event_id": _id(messages[-1])}),
                          ("--event (unknown)", {"event_id": "no-such-event"}),
                          ("--event-prefix (8 hex)", {"event_prefix": _id(messages[len(messages) // 3])[:8]})):
        times, found = [], 0
        for _ in range(3):
            start = time.perf_counter()
            found = len(list_decisions(state_db, **kwargs))
            times.append(time.perf_counter() - start)
        print(f"  {label}: {found} decisions, median {1000 * statistics.median(times):.1f} ms")


def _id(message: Message) -> str:
    import orjson

    return orjson.loads(message.value)["id"]


def phases(raw: Path) -> None:
    """Shares of py-spy's raw samples (one folded stack and a count a line) by phase, sensor samples only."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "step (" not in stack and "_consume" not in stack:
            continue
        frames = stack.split(";")
        phase = next((name for frame in reversed(frames) for name, marks in PHASES
                      if any(mark in frame for mark in marks)), "other")
        counts[phase] += int(n)
    total = sum(counts.values())
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")
    print(f"({total} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--phases", type=Path, default=None, metavar="RAW", help="read a py-spy raw profile")
    parser.add_argument("--by-phase", action="store_true", help="CPU µs per event by phase, one pass")
    parser.add_argument("--lookup", action="store_true", help="time `ctloop events list` on the log decided")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep Python's GC thresholds instead of `ctloop sensor run`'s")
    args = parser.parse_args()
    if not args.default_gc:
        from ctloop.sensors.cli import collect_garbage_less

        collect_garbage_less()
    if args.phases:
        phases(args.phases)
        return
    messages = arrivals(args.events, args.models)
    if args.lookup:
        with tempfile.TemporaryDirectory() as tmp:
            lookup(messages, Path(tmp), args.batch, args.models)
        return
    if args.by_phase:
        with open(os.devnull, "w") as devnull, tempfile.TemporaryDirectory() as tmp:
            jsonlog.configure()
            logging.getLogger("ctloop.sensor").handlers[0].setStream(devnull)
            spent = by_phase(messages, Path(tmp), args.batch)
        for phase, seconds in sorted(spent.items(), key=lambda kv: (kv[0] == "total", -kv[1])):
            print(f"| {phase} | {1e6 * seconds / args.events:.1f} |")
        return
    cpus, walls = [], []
    for _ in range(args.reps):
        # As `ctloop sensor run` configures it; the lines are formatted, then dropped.
        with open(os.devnull, "w") as devnull, tempfile.TemporaryDirectory() as tmp:
            jsonlog.configure()
            logging.getLogger("ctloop.sensor").handlers[0].setStream(devnull)
            cpu, wall, runs = one_pass(messages, Path(tmp), args.batch)
        cpus.append(cpu)
        walls.append(wall)
        print(f"  {1e6 * cpu / args.events:.1f} µs CPU/event, {1e6 * wall / args.events:.1f} µs wall/event, "
              f"{runs} runs")
    print(f"median: {1e6 * statistics.median(cpus) / args.events:.1f} µs CPU/event, "
          f"{1e6 * statistics.median(walls) / args.events:.1f} µs wall/event ({args.events} events, "
          f"{args.models} models, batches of {args.batch})")


if __name__ == "__main__":
    main()

"""Joiner benchmark: served rows and labels joined per second, side by side with the drift monitor's ingest of
the same prediction batches, and against reading the raw topics.

    $V/bin/python bench/joiner.py [--batches 30] [--batch-rows 1000] [--reps 3] [--kafka 127.0.0.1:9092] [--rows-form]

Per rep, on a fresh bus, three label shapes on their own topics: `batches` prediction batches (20 feature
columns, ids in serving's `<batch uuid hex>-<i>` form, class probabilities) with one `ctloop.label.observed`
event per served row; the same batches with one `ctloop.labels.observed` event per batch's labels; and that
again with the rows carrying an entity key column and the labels naming model and key instead of the id (a
fifth of the labels, in every shape, before their predictions). Timed, each from its first message on (joining
the consumer group is not counted):
- the monitor: `MonitorService` over the predictions topic (parse, fold, detect per 10k-row window, commit);
- the joiner, per shape: `Joiner` over both topics into a fresh SQLite store until every label joined
  (parse, store, join, commit), as served rows/s (equal to labels/s: one label per row);
- both by wall clock and per CPU-second of this process (steadier on a shared machine), after `gc.freeze()` of
  the setup's heap, as `ctloop outcomes run` does at start (it applies to the monitor alike);
- the raw read of both topics, per shape, no processing.
Medians over reps. `--parts` prints, per shape, the joiner's CPU per served row and its label by part: parsing
prediction batches, parsing label events, the store's `add` (SQLite and the in-memory join), the rest (polls,
commits); each part timed with `time.process_time()` around it, summed over the reps.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monitor as monitor_bench

from ctloop.bus import Bus
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import LabelObserved, LabelsObserved, new_event, to_bytes
from ctloop.monitors.joiner import Joiner
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.outcomes import OutcomeStore
from ctloop.monitors.reference import Reference
from ctloop.monitors.service import MonitorService
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch, columnar_form
from ctloop.profile import build_profile
from ctloop.settings import Settings, Topics

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def publish(bus: Bus, topics: Topics, batches: int, batch_rows: int, *, batched: bool, by_key: bool = False,
            rows_form: bool = False) -> int:
    """The prediction batches and their labels: one `ctloop.label.observed` event per row, or (`batched`) one
    `ctloop.labels.observed` event per batch's labels, naming the row by its id or (`by_key`) by the model and
    the row's `customer` key; returns the served rows. Batches are columnar, as serving logs them, or
    (`rows_form`) objects per row, as older servers and other producers write them."""
    rng = np.random.default_rng(1)
    rows = monitor_bench.frame(rng, batch_rows).to_dict(orient="records")
    labels = rng.integers(0, 2, batch_rows).tolist()
    observed = T0 + timedelta(minutes=10)
    early = set(range(0, batches, 5))
    for i in range(batches):
        key = uuid.uuid4().hex  # serving names a batch's rows <batch uuid hex>-<i>
        ids = [f"{key}-{r}" for r in range(batch_rows)]
        if by_key:
            rows = [{**row, "customer": i * batch_rows + r} for r, row in enumerate(rows)]
            items = [LabelObserved(model="bench", key=str(i * batch_rows + r), label=y, observed_at=observed)
                     for r, y in enumerate(labels)]
        else:
            items = [LabelObserved(prediction_id=pid, label=y, observed_at=observed)
                     for pid, y in zip(ids, labels, strict=True)]
        events = ([to_bytes(new_event(LabelsObserved(labels=items)))] if batched
                  else [to_bytes(new_event(item)) for item in items])
        if i in early:
            for event in events:
                bus.publish(topics.labels, event)
        form = {"rows": rows} if rows_form else dict(zip(("columns", "data"), columnar_form(rows), strict=True))
        batch = PredictionBatch(model="bench", version="1", **form, ids=ids,
                                predictions=[{"0": 0.3, "1": 0.7}] * batch_rows, ts=T0 + timedelta(seconds=i))
        bus.publish(topics.predictions, batch.to_bytes(), key="bench")
        if i not in early:
            for event in events:
                bus.publish(topics.labels, event)
    bus.flush()
    return batches * batch_rows


@dataclass(frozen=True)
class Rate:
    """Work done (served rows; for the joiner, rows and their labels) per wall second and per CPU second."""

    wall: float
    cpu: float
    seconds: float


def _rate(work: float, wall_start: float, cpu_start: float) -> Rate:
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return Rate(work / wall, work / cpu, wall)


def monitor_ingest(bus: Bus, settings: Settings, total: int) -> Rate:
    profile = build_profile(monitor_bench.frame(np.random.default_rng(2), 20_000), numeric=monitor_bench.NUMERIC,
                            categorical=monitor_bench.CATEGORICAL)
    monitor = DriftMonitor(Reference(profile, "bench"), MonitorConfig(window=WindowPolicy(max_rows=10_000)))
    service = MonitorService(bus, settings, monitor, group=f"bench-{uuid.uuid4().hex[:6]}")
    service.step(timeout_s=30, max_records=1)
    start, cpu, first = time.perf_counter(), time.process_time(), service.stats.rows
    while service.stats.rows < total and time.perf_counter() < start + 300:
        service.step(timeout_s=0.5, max_records=50)
    rate = _rate(service.stats.rows - first, start, cpu)
    service.close()
    return rate


def joiner_ingest(bus: Bus, settings: Settings, total: int, store_dir: Path, key: str | None = None) -> Rate:
    """Served rows (each with its label) per second, from the joiner's first message until every label joined;
    what the first poll did, before the clock started, is not counted."""
    store = OutcomeStore(f"sqlite:///{store_dir / f'{uuid.uuid4().hex}.db'}")
    joiner = Joiner(bus, settings, store, key_column=lambda model: key, group=f"bench-{uuid.uuid4().hex[:6]}")
    joiner.step(timeout_s=30, max_records=1)
    start, cpu = time.perf_counter(), time.process_time()
    rows, labels = joiner.stats.rows, joiner.stats.labels
    while store.joined_count() < total and time.perf_counter() < start + 300:
        joiner.step(timeout_s=0.5, max_records=2000)
    rate = _rate((joiner.stats.rows - rows + joiner.stats.labels - labels) / 2, start, cpu)
    joined = store.joined_count()
    joiner.close()
    store.close()
    if joined < total:
        raise RuntimeError(f"only {joined} of {total} labels joined within 300 s")
    return rate


def raw_read(bus: Bus, topics: Topics, messages: int) -> float:
    consumer = bus.consumer([topics.predictions, topics.labels], f"raw-{uuid.uuid4().hex[:6]}")
    count = len(consumer.poll(timeout_s=30, max_records=1))
    start = time.perf_counter()
    while count < messages and time.perf_counter() < start + 300:
        count += len(consumer.poll(timeout_s=0.5, max_records=2000))
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


class Parts:
    """CPU seconds spent in the joiner's parts, by wrapping the methods that do them."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {"batch parse": 0.0, "label parse": 0.0, "store": 0.0}
        for cls, method, part in ((Joiner, "_read_batch", "batch parse"), (Joiner, "_read_labels", "label parse"),
                                  (OutcomeStore, "add", "store")):
            setattr(cls, method, self._timed(getattr(cls, method), part))

    def _timed(self, fn, part: str):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[part] += time.process_time() - start
        return timed

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, dict.fromkeys(self.spent, 0.0)
        return spent


def run(name: str, open_bus, topics_for, reps: int, batches: int, batch_rows: int, parts: Parts | None = None,
        rows_form: bool = False) -> None:
    shapes = ("single", "batched", "by key")
    monitor: list[Rate] = []
    joiner: dict[str, list[Rate]] = {shape: [] for shape in shapes}
    raw_s: dict[str, list[float]] = {shape: [] for shape in shapes}
    total = batches * batch_rows
    label_messages = {"single": total, "batched": batches, "by key": batches}
    spent: dict[str, dict[str, float]] = {shape: {} for shape in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            bus = open_bus(Path(tmp))
            for shape in shapes:
                topics = topics_for()
                settings = Settings(home=Path(tmp), topics=topics)
                publish(bus, topics, batches, batch_rows, batched=shape != "single", by_key=shape == "by key",
                        rows_form=rows_form)
                gc.freeze()
                if shape == "single":
                    monitor.append(monitor_ingest(bus, settings, total))
                if parts is not None:
                    parts.take()
                joiner[shape].append(joiner_ingest(bus, settings, total, Path(tmp),
                                                   key="customer" if shape == "by key" else None))
                if parts is not None:
                    for part, seconds in parts.take().items():
                        spent[shape][part] = spent[shape].get(part, 0.0) + seconds
                raw_s[shape].append(raw_read(bus, topics, batches + label_messages[shape]))
            bus.close()
    med = statistics.median
    m_wall, m_cpu = med(r.wall for r in monitor), med(r.cpu for r in monitor)
    form = "rows" if rows_form else "columnar"
    print(f"{name}: {batches} {form} batches x {batch_rows} rows (20 features) and {total} labels, medians of {reps}")
    print(f"  monitor ingest (predictions topic)   {m_wall:>9,.0f} rows/s, {m_cpu:>9,.0f} rows per CPU-s   1x")
    for shape, words in (("single", "one label per event"), ("batched", f"{batch_rows} labels per event"),
                         ("by key", f"{batch_rows} per event, by entity key")):
        wall, cpu = med(r.wall for r in joiner[shape]), med(r.cpu for r in joiner[shape])
        took, raw = med(r.seconds for r in joiner[shape]), med(raw_s[shape])
        print(f"  joiner, {words:<28}{wall:>9,.0f} rows/s, {cpu:>9,.0f} rows per CPU-s   "
              f"{wall / m_wall:.2f}x by wall, {cpu / m_cpu:.2f}x per CPU-s ({took:.2f} s; raw read of both topics "
              f"{raw:.2f} s, {(batches + label_messages[shape]) / raw:,.0f} msg/s: joiner / raw {took / raw:.1f}x)")
        if parts is not None:
            per_pair = {part: seconds / (total * reps) * 1e6 for part, seconds in spent[shape].items()}
            rest = 1e6 / cpu - sum(per_pair.values())
            print("      CPU per pair: " + ", ".join(f"{part} {us:.1f} us" for part, us in per_pair.items())
                  + f", the rest {rest:.1f} us (of {1e6 / cpu:.1f} us, median rep)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--kafka", help="bootstrap of a running broker, to measure on Kafka too")
    parser.add_argument("--parts", action="store_true", help="also the joiner's CPU per pair by part")
    parser.add_argument("--rows-form", action="store_true",
                        help="prediction batches as objects per row (older servers), not columnar as serving logs")
    args = parser.parse_args()
    parts = Parts() if args.parts else None

    def fresh_topics() -> Topics:
        tag = uuid.uuid4().hex[:8]
        return Topics(predictions=f"bench-{tag}.p", labels=f"bench-{tag}.l", deadletter=f"bench-{tag}.dl",
                      drift=f"bench-{tag}.d")

    run("embedded bus", lambda tmp: EmbeddedBus(tmp / f"bus-{uuid.uuid4().hex}.db"), fresh_topics, args.reps,
        args.batches, args.batch_rows, parts, args.rows_form)
    if args.kafka:
        from ctloop.kafka_bus import KafkaBus

        run("kafka", lambda tmp: KafkaBus(args.kafka), fresh_topics, args.reps, args.batches, args.batch_rows, parts,
            args.rows_form)


if __name__ == "__main__":
    main()

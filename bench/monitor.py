"""Drift monitor benchmark: the fast path against Evidently's DataDriftPreset, and ingest rows/s.

    $V/bin/python bench/monitor.py [--reps 3] [--kafka 127.0.0.1:9092]

1. Time per window (10k rows x 20 columns against a 100k-row reference), in the same run:
   - Evidently 0.7 `Report([DataDriftPreset()]).run(window, reference)` on the full reference;
   - the fast path's verdict on an accumulated window (`DriftDetector.detect`), and the fast path
     including folding the window's 10k row dicts in (`Window.add` + `detect`).
   Medians over --reps; ratios Evidently / fast path. The profile is built once (timed separately).
2. Ingest: rows/s through `MonitorService` from the embedded bus (and Kafka with --kafka), batches
   of 1000 rows, 10k-row windows, no reports; publishing is done before timing. Each prediction-batch
   form (`--forms`: columnar, what serving writes, and rows, what it wrote before) is measured in turn,
   on a topic of its own; `--ingest-only` skips part 1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.bus import Bus
from ctloop.embedded_bus import EmbeddedBus
from ctloop.monitors.detector import DriftDetector
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.service import MonitorService
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings, Topics

NUMERIC = [f"n{i}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
CATEGORIES = [f"k{j}" for j in range(8)]


def frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    data: dict[str, object] = {}
    for i, name in enumerate(NUMERIC):
        moved = shift if i % 2 == 0 else 0.0
        data[name] = rng.normal(moved + i, 1.0 + i / 10, rows)
    for i, name in enumerate(CATEGORICAL):
        p = np.linspace(1, 2 + i, len(CATEGORIES))
        if shift and i % 2 == 0:
            p = p[::-1]
        data[name] = rng.choice(CATEGORIES, rows, p=p / p.sum())
    return pd.DataFrame(data)


def median_time(fn, reps: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def evidently_run(reference: pd.DataFrame, current: pd.DataFrame):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def window_bench(reps: int, ref_rows: int, window_rows: int) -> None:
    rng = np.random.default_rng(0)
    reference = frame(rng, ref_rows)
    current = frame(rng, window_rows, shift=0.3)
    rows = current.to_dict(orient="records")
    start = time.perf_counter()
    profile = build_profile(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    build_s = time.perf_counter() - start
    detector = DriftDetector(profile)
    window = detector.new_window()
    window.add(rows, datetime.now(UTC))

    def ingest_and_detect():
        w = detector.new_window()
        w.add(rows, datetime.now(UTC))
        return detector.detect(w)

    evidently_run(reference.head(2000), current.head(500))  # warm imports and caches
    ev_s, _ = median_time(lambda: evidently_run(reference, current), reps)
    detect_s, verdict = median_time(lambda: detector.detect(window), max(reps, 20))
    full_s, _ = median_time(ingest_and_detect, max(reps, 20))
    print(f"window: {window_rows} rows x {len(NUMERIC) + len(CATEGORICAL)} columns "
          f"({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical), reference {ref_rows} rows "
          f"(profile keeps {profile.kept_rows}, built in {build_s * 1000:.0f} ms)")
    print(f"  Evidently DataDriftPreset (full reference) median {ev_s * 1000:9.1f} ms  (reps={reps})")
    print(f"  fast path detect                           median {detect_s * 1000:9.2f} ms  "
          f"ratio {ev_s / detect_s:7.0f}x")
    print(f"  fast path fold 10k row dicts + detect      median {full_s * 1000:9.2f} ms  "
          f"ratio {ev_s / full_s:7.0f}x")
    print(f"  verdict: drifted {len(verdict.drifted_columns)}/{len(verdict.columns)} columns, "
          f"dataset drift {verdict.dataset_drift}")


FORMS = ("columnar", "rows")


def publish(bus: Bus, topic: str, batches: int, batch_rows: int, form: str) -> int:
    rng = np.random.default_rng(1)
    served = frame(rng, batch_rows)
    by_column = (served[c].tolist() for c in served)
    features: dict[str, object] = (
        {"columns": list(served.columns), "data": [list(r) for r in zip(*by_column, strict=True)]}
        if form == "columnar" else {"rows": served.to_dict(orient="records")})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(batches):
        value = PredictionBatch(model="bench", predictions=[0] * batch_rows, ts=t0 + timedelta(seconds=i),
                                **features).to_bytes()
        bus.publish(topic, value, key="bench")
    bus.flush()
    return batches * batch_rows


def drain_only(bus: Bus, topic: str, total_messages: int) -> tuple[float, int]:
    """Seconds to read the topic without processing (from the first message on), and messages read."""
    consumer = bus.consumer([topic], f"drain-{uuid.uuid4().hex[:6]}")
    first = consumer.poll(timeout_s=30, max_records=50)
    start, count = time.perf_counter(), len(first)
    deadline = start + 300
    while count < total_messages and time.perf_counter() < deadline:
        count += len(consumer.poll(timeout_s=0.5, max_records=50))
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed, count


def ingest_bench(name: str, bus: Bus, settings: Settings, batches: int, batch_rows: int, form: str) -> None:
    rng = np.random.default_rng(2)
    profile = build_profile(frame(rng, 20_000), numeric=NUMERIC, categorical=CATEGORICAL)
    total = publish(bus, settings.topics.predictions, batches, batch_rows, form)
    monitor = DriftMonitor(Reference(profile, "bench"), MonitorConfig(window=WindowPolicy(max_rows=10_000)))
    service = MonitorService(bus, settings, monitor, group=f"bench-{uuid.uuid4().hex[:6]}")
    # Time from the first batch on, so that joining the consumer group is not counted.
    service.step(timeout_s=30, max_records=1)
    start, cpu = time.perf_counter(), time.process_time()
    first_rows = service.stats.rows
    deadline = start + 300
    while service.stats.rows < total and time.perf_counter() < deadline:
        service.step(timeout_s=0.5, max_records=50)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    service.close()
    rows = service.stats.rows - first_rows
    drain_s, drained = drain_only(bus, settings.topics.predictions, batches)
    print(f"ingest {name}, {form} batches: {rows} rows in {service.stats.messages - 1} messages "
          f"({batch_rows} rows each), {service.stats.windows} windows, {elapsed:.2f} s: "
          f"{rows / elapsed:,.0f} rows/s, {(service.stats.messages - 1) / elapsed:,.1f} msg/s, "
          f"{cpu / rows * 1e6:.2f} CPU us per row")
    print(f"  baseline, reading the same topic without processing: {drained} messages in {drain_s:.2f} s: "
          f"{drained * batch_rows / drain_s:,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--window-rows", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--kafka", help="bootstrap of a running broker, to measure ingest from Kafka too")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS),
                        help="the prediction-batch forms to ingest, one after the other")
    parser.add_argument("--ingest-only", action="store_true", help="skip the per-window comparison with Evidently")
    args = parser.parse_args()
    if not args.ingest_only:
        window_bench(args.reps, args.reference_rows, args.window_rows)
    for form in args.forms:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp))
            bus = EmbeddedBus(Path(tmp) / "bus.db")
            ingest_bench("embedded bus", bus, settings, args.batches, args.batch_rows, form)
            bus.close()
        if args.kafka:
            from ctloop.kafka_bus import KafkaBus

            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            settings = Settings(home=Path(tempfile.gettempdir()), kafka_bootstrap=args.kafka,
                                topics=Topics(predictions=f"{prefix}.p", drift=f"{prefix}.d",
                                              deadletter=f"{prefix}.dl"))
            bus = KafkaBus(args.kafka)
            ingest_bench("kafka", bus, settings, args.batches, args.batch_rows, form)
            bus.close()


if __name__ == "__main__":
    main()

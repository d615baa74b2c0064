"""What scheduled ticks cost the sensor loop: an idle `LocalSensor.step` with no schedules vs with N scheduled
models (nothing due), side by side in one run; and the worst catch-up computation (a minutely schedule
after a week down). Medians of `--reps` rounds; ratios are what to read on a shared machine.

    .venv/bin/python bench/schedules.py [--models 20] [--steps 2000] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ctloop.embedded_bus import EmbeddedBus
from ctloop.modelspec import DataSchema, Feature, ModelSpec, Schedule
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.catalog import kafka_sensors, schedule_sensors
from ctloop.sensors.local.calendar import newest_due, source_of
from ctloop.sensors.local.sensor import LocalSensor
from ctloop.settings import Settings
from ctloop.workflows.engine import RunHandle, RunRequest, RunStatus


class NoEngine:
    """Idle steps submit nothing; a submission here is a bug in the benchmark."""

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        raise AssertionError(f"unexpected submission for {request.model}")

    def status(self, run_id: str) -> RunStatus:
        raise AssertionError(run_id)


def models(n: int) -> list[ModelSpec]:
    return [ModelSpec(name=f"m{i}", data=DataSchema(features=(Feature(name="x"),), label="y"),
                      schedule=Schedule(cron=f"{i % 60} 3 * * *", timezone="Europe/Berlin",
                                        data_uri=f"file:///nonexistent/m{i}/")) for i in range(n)]


def idle_step_us(home: Path, scheduled: list[ModelSpec], steps: int) -> float:
    settings = Settings(home=home)
    bus = EmbeddedBus(settings.state_db)
    specs = [*kafka_sensors(settings, "bench"), *schedule_sensors(scheduled, "bench")]
    sensor = LocalSensor(settings, bus, NoEngine(), specs, policy=AdmissionPolicy())
    sensor.step(0)  # arms the schedules
    start = time.perf_counter()
    for _ in range(steps):
        sensor.step(0)
    elapsed = time.perf_counter() - start
    sensor.close()
    bus.close()
    return elapsed / steps * 1e6


def catch_up_ms() -> float:
    [spec] = schedule_sensors([ModelSpec(name="m", data=DataSchema(features=(Feature(name="x"),), label="y"),
                                         schedule=Schedule(cron="* * * * *", data_uri="file:///x/"))], "bench")
    now = datetime(2026, 6, 8, 12, tzinfo=UTC)
    start = time.perf_counter()
    newest, missed = newest_due(source_of(spec), now - timedelta(days=7), now)
    assert newest == now and missed >= 999
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    base, cal, catch = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            base.append(idle_step_us(Path(tmp) / f"base{rep}", [], args.steps))
            cal.append(idle_step_us(Path(tmp) / f"cal{rep}", models(args.models), args.steps))
            catch.append(catch_up_ms())
    b, c = statistics.median(base), statistics.median(cal)
    print(f"idle step, no schedules:          median {b:8.1f} us  (range {min(base):.1f}-{max(base):.1f})")
    print(f"idle step, {args.models} schedules, none due: median {c:8.1f} us  (range {min(cal):.1f}-{max(cal):.1f})")
    print(f"ratio with/without schedules: {c / b:.3f}")
    print(f"catch-up after a week of a minutely schedule: median {statistics.median(catch):.1f} ms")


if __name__ == "__main__":
    main()

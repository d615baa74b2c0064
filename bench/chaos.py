"""Chaos run of the full retrain template, side by side with the same workload undisturbed; `--cheap` runs the
older sensor-scale scenario instead (a cheap one-step template, many events, random-moment kills).

Full template (default):
  $V/bin/python bench/chaos.py [--models 3] [--batches 3] [--seed 1] [--retry-interrupted 5] [--keep DIR]

A local single-node Kafka (KRaft) and a real `mlflow server` (SQLite backend), both started here. Per model,
`--batches` data sets of 300 rows; their arrivals (with redeliveries, repeats under new ids and 3 garbage
messages) go to a sensor process running the production template (snapshot → validate → train → evaluate →
promote/register, built-in trainer, 2 epochs). Chaos: each round's sensor/engine process is SIGKILLed at a
crash point or inside a chosen step; in two rounds the broker is SIGKILLed with messages still being
published, in two the registry is SIGKILLed while a step talks to it; each is restarted on its port. The
audit reads the registry and the bus (tests/reliability/outside_audit.py). See BENCHMARKS.md, Chaos.

Cheap (`--cheap`): [--events 2000] [--models 8] [--kills 20] [--train-s 0.2] [--bootstrap H:P]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctloop.kafka_local import LocalKafka
from tests.fixtures.mlflow_server import MlflowServer
from tests.reliability.chaos import chaos_settings, run_chaos, side_by_side, workload
from tests.reliability.chaos_full import Plan, run_full_chaos, table

TARGETS = ("crash:model-registered", "train", "evaluate", "promote|register", "crash:audit-written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cheap", action="store_true", help="the sensor-scale scenario with a cheap template")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--models", type=int)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--retry-interrupted", type=int, default=len(TARGETS),
                        help="restarts of an interrupted run (`ctloop sensor run`: 2)")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--train-s", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", help="an existing broker (no broker restart then; --cheap only)")
    parser.add_argument("--keep", type=Path, help="keep the state and every process's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctloop-chaos-") as tmp:
        root = args.keep or Path(tmp)
        if args.cheap:
            cheap(args, root)
        else:
            full(args, root)


def full(args: argparse.Namespace, root: Path) -> None:
    models = args.models or 3
    quiet = Plan(targets=(), broker_kill_rounds=(), registry_kill_rounds=(), models=models, batches=args.batches)
    chaos = Plan(targets=TARGETS, broker_kill_rounds=(1, 3), registry_kill_rounds=(2, 3), models=models,
                 batches=args.batches, retry_interrupted=args.retry_interrupted)
    outcomes = {}
    for name, plan in (("no faults", quiet), ("chaos", chaos)):
        broker = LocalKafka(root / name / "kafka")
        broker.start()
        registry = MlflowServer(root / name / "mlflow").start()
        try:
            outcomes[name] = run_full_chaos(root / name / "run", plan, random.Random(args.seed), broker=broker,
                                            registry=registry)
        finally:
            registry.stop()
            broker.stop()
    print(f"full template, {models} models x {args.batches} data sets, seed {args.seed},"
          f" retry_interrupted {args.retry_interrupted}\n")
    for name, outcome in outcomes.items():
        print(f"## {name}\n\n{table(outcome)}\n")
    print(f"wall time ratio (chaos / no faults): {outcomes['chaos'].seconds / outcomes['no faults'].seconds:.2f}")
    if any(o.audit is None or o.audit.problems or o.events_decided != o.events for o in outcomes.values()):
        sys.exit(1)


def cheap(args: argparse.Namespace, root: Path) -> None:
    models = args.models or 8
    broker = None
    if args.bootstrap is None:
        broker = LocalKafka(root / "kafka")
        broker.start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        work = workload(random.Random(args.seed), events=args.events, models=models)
        quiet = run_chaos(chaos_settings(root / "quiet", bootstrap), work, kills=0,
                          rng=random.Random(args.seed), train_s=args.train_s, settle_timeout_s=600)
        chaos = run_chaos(chaos_settings(root / "chaos", bootstrap), work, kills=args.kills,
                          rng=random.Random(args.seed), train_s=args.train_s,
                          restart_broker=broker.restart if broker else None,
                          restart_after_kill=args.kills // 2, settle_timeout_s=600)
    finally:
        if broker is not None:
            broker.stop()
    print(f"{args.events} arrivals for {models} models, train step {args.train_s}s, seed {args.seed}\n")
    print(side_by_side({"no faults": quiet, f"{args.kills} SIGKILLs + broker restart": chaos}))
    print(f"\nwall time ratio (chaos / no faults): {chaos.seconds / quiet.seconds:.2f}")
    for name, report in (("no faults", quiet), ("chaos", chaos)):
        for problem in report.problems:
            print(f"PROBLEM ({name}): {problem}")
    if quiet.problems or chaos.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()

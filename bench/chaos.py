"""Chaos run: the crash-anywhere and broker-restart scenarios at a larger scale, side by side with the same
workload on an undisturbed sensor.

Run: $V/bin/python bench/chaos.py [--events 2000] [--models 8] [--kills 20] [--train-s 0.2] [--bootstrap H:P]

Without --bootstrap it starts a local single-node Kafka (KRaft, as the tests do) in a temp dir; the broker
restart needs that local broker. Each round starts a sensor process (`LocalSensor` + `LocalEngine` running
a cheap, memoized train step, as `ctloop sensor run` wires them), publishes a slice of the arrivals while
it runs, and SIGKILLs it at a random moment after it made progress; halfway the broker restarts under a
running sensor. Then one last process runs until every event is decided and no run is unfinished, and
the decision log, run store and dead-letter topic are audited (tests/reliability/chaos.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctloop.kafka_local import LocalKafka
from tests.reliability.chaos import chaos_settings, run_chaos, side_by_side, workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--train-s", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", help="an existing broker (no broker restart then)")
    parser.add_argument("--keep", type=Path, help="keep the state and every sensor process's log here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ctloop-chaos-") as tmp:
        root = args.keep or Path(tmp)
        broker = None
        if args.bootstrap is None:
            broker = LocalKafka(root / "kafka")
            broker.start()
        bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        try:
            work = workload(random.Random(args.seed), events=args.events, models=args.models)
            quiet = run_chaos(chaos_settings(root / "quiet", bootstrap), work, kills=0,
                              rng=random.Random(args.seed), train_s=args.train_s, settle_timeout_s=600)
            chaos = run_chaos(chaos_settings(root / "chaos", bootstrap), work, kills=args.kills,
                              rng=random.Random(args.seed), train_s=args.train_s,
                              restart_broker=broker.restart if broker else None,
                              restart_after_kill=args.kills // 2, settle_timeout_s=600)
        finally:
            if broker is not None:
                broker.stop()
    print(f"{args.events} arrivals for {args.models} models, train step {args.train_s}s, seed {args.seed}\n")
    print(side_by_side({"no faults": quiet, f"{args.kills} SIGKILLs + broker restart": chaos}))
    print(f"\nwall time ratio (chaos / no faults): {chaos.seconds / quiet.seconds:.2f}")
    for name, report in (("no faults", quiet), ("chaos", chaos)):
        for problem in report.problems:
            print(f"PROBLEM ({name}): {problem}")
    if quiet.problems or chaos.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()

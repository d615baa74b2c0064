"""What keying an event by its model's own trainer code costs the local sensor, per event.

    python bench/key_version.py [--events 2000] [--reps 5] [--max-age-s 1.0]

Side by side in one process: the data-arrived sensor's parameters (the idempotency key, the Workflow name and
the rest, as `LocalSensor` resolves them) for an event of a built-in model (no lookup beyond a dict miss) and
of a model whose spec names examples/digits_cnn's trainer (its package hashed from disk at most once per
`--max-age-s`, so an edit reaches a running sensor within that time; 0 hashes on every event). Medians over
the repetitions, microseconds per event, and their ratio, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "digits_cnn"))

from ctloop.modelspec import ModelSpec  # noqa: E402
from ctloop.sensors.catalog import ClusterEndpoints, data_arrived_sensor  # noqa: E402
from ctloop.sensors.mapping import parameters  # noqa: E402
from ctloop.sensors.versions import local_versions  # noqa: E402
from ctloop.settings import Settings  # noqa: E402


def _event(model: str, i: int) -> dict:
    return {"topic": "ctloop.data", "body": {"id": f"e{i}", "type": "ctloop.data.arrived",
                                             "data": {"model": model, "uri": f"s3://b/{i}", "digest": f"d{i}"}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-age-s", type=float, default=1.0)
    args = parser.parse_args()
    own = ModelSpec.model_validate_json((ROOT / "examples" / "digits_cnn" / "spec.json").read_text())
    versions = local_versions([own], "git:bench", max_age_s=args.max_age_s)
    spec = data_arrived_sensor(Settings(), versions, ClusterEndpoints())
    cases = {"builtin": [_event("churn", i) for i in range(args.events)],
             "own_trainer": [_event(own.name, i) for i in range(args.events)]}
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.reps):
        for name, events in cases.items():  # alternated, so load on the shared host hits both alike
            start = time.perf_counter()
            for event in events:
                parameters(spec, event, {"id": "x"})
            timings[name].append((time.perf_counter() - start) / len(events) * 1e6)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(json.dumps({"events": args.events, "reps": args.reps, "max_age_s": args.max_age_s,
                      "us_per_event": {k: round(v, 1) for k, v in medians.items()},
                      "ratio": round(medians["own_trainer"] / medians["builtin"], 2),
                      "added_us_per_event": round(medians["own_trainer"] - medians["builtin"], 1)}))


if __name__ == "__main__":
    main()

"""Container step overhead: the retrain workflow with every step in its image vs. steps in-process.

    .venv/bin/python bench/container_steps.py [--runs 3] [--image ghcr.io/ctloop/ctloop:0.1.0]

Side by side in one run, alternating the two modes: `LocalEngine(step_mode="inprocess")` (the baseline,
steps in worker threads of the engine's interpreter, libraries already imported after the first run) and
`LocalEngine(step_mode="container")` (each step a `docker run` of the runtime image: container start,
interpreter start, imports of ctloop/torch/mlflow, the step, outputs read back). Each run trains on fresh
data (a new seed), so no step is memoized. Medians per step and for the whole run, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctloop.modelspec import save_spec
from ctloop.settings import Settings
from ctloop.workflows.engine import RunRequest
from ctloop.workflows.local.engine import LocalEngine
from tests.trainer.conftest import make_spec
from tests.workflows.test_retrain import write_data

MODEL = "churn"


def one_run(mode: str, root: Path, seed: int, image: str) -> dict[str, float]:
    settings = Settings(home=root / mode, image=image)
    save_spec(make_spec(epochs=3), settings)
    data = write_data(settings.store_root / "data" / str(seed), seed=seed)  # a container sees the home only
    engine = LocalEngine(settings, step_mode=mode)  # type: ignore[arg-type]
    began = time.perf_counter()
    handle = engine.submit(RunRequest(model=MODEL, data_uri=data, trigger_event_id=f"{mode}-{seed}", trigger="data"))
    wall = time.perf_counter() - began
    record = engine.run(handle.run_id)
    if handle.status != "Succeeded":
        raise SystemExit(f"{mode} run {seed} ended {handle.status}: {record.error}")
    times = {s.name: s.finished_at - s.started_at for s in record.steps
             if s.started_at is not None and s.finished_at is not None and not s.cached}
    times["(whole run)"] = wall
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", default=Settings().image)
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {"inprocess": {}, "container": {}}
    with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
        root = Path(tmp)
        for i in range(args.runs + 1):
            for mode in ("inprocess", "container"):
                times = one_run(mode, root, seed=i, image=args.image)
                if i == 0:
                    continue  # warm-up: first imports in this process, the registry's first model
                for step, seconds in times.items():
                    samples[mode].setdefault(step, []).append(seconds)
    print(f"median seconds over {args.runs} runs (after one warm-up run each)")
    print(f"{'step':<22}{'in-process':>12}{'container':>12}{'overhead':>12}{'ratio':>8}")
    for step in samples["container"]:
        inproc = statistics.median(samples["inprocess"].get(step, [float("nan")]))
        contained = statistics.median(samples["container"][step])
        print(f"{step:<22}{inproc:>12.2f}{contained:>12.2f}{contained - inproc:>12.2f}{contained / inproc:>8.1f}")


if __name__ == "__main__":
    main()

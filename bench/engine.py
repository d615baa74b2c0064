"""LocalEngine orchestration overhead per step, and the latency of a fully cached rerun.

    $V/bin/python bench/engine.py [--steps 10] [--runs 30]

Side by side in one run:
- baseline: calling the same trivial step functions directly in a loop (no engine);
- LocalEngine, steps in-process: a chain of N do-nothing steps; overhead per step =
  (run wall time - time inside the step functions) / N, which covers claiming the key, recording
  every step (durable SQLite commits), expression substitution, the worker thread per step, artifacts dirs;
- LocalEngine, steps in subprocesses (few runs: each step pays an interpreter start);
- a fully cached rerun: the same chain with every step memoized, rerun under a new idempotency key.
Medians over the runs. Goals: <= 10 ms per step in-process, <= 100 ms for a cached rerun.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctloop.settings import Settings
from ctloop.workflows.local.engine import LocalEngine
from tests.workflows import toy_steps, toy_templates


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def baseline(steps: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        for _ in range(steps):
            toy_steps.nothing()
        out.append(time.perf_counter() - began)
    return out


def engine_runs(home: Path, steps: int, runs: int, *, memoize: bool, step_mode: str = "inprocess",
                warm: bool = False) -> list[float]:
    engine = LocalEngine(Settings(home=home), template=toy_templates.chain(steps, memoize=memoize), step_mode=step_mode)
    if warm:
        engine.start({"key": "fixed"}, key="warm-up")
    out = []
    for i in range(runs):
        began = time.perf_counter()
        handle = engine.start({"key": "fixed" if memoize else f"k{i}"}, key=f"{step_mode}-{memoize}-{i}")
        out.append(time.perf_counter() - began)
        assert handle.status == "Succeeded", engine.run(handle.run_id).error
        if memoize:
            assert all(s.cached for s in engine.run(handle.run_id).steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--subprocess-runs", type=int, default=3)
    args = parser.parse_args()
    n = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        direct = baseline(n, args.runs)
        inproc = engine_runs(root / "a", n, args.runs, memoize=False)
        cached = engine_runs(root / "b", n, args.runs, memoize=True, warm=True)
        subproc = engine_runs(root / "c", n, args.subprocess_runs, memoize=False, step_mode="subprocess")
    step_time = median_ms(direct)
    reference = median_ms(inproc)
    rows = [(name, median_ms(samples), (median_ms(samples) - step_time) / n, median_ms(samples) / reference)
            for name, samples in (("direct calls (baseline)", direct), ("LocalEngine, in-process", inproc),
                                  ("cached rerun, in-process", cached), ("LocalEngine, subprocess", subproc))]
    print(f"{n} trivial steps per run; medians over {args.runs} runs ({args.subprocess_runs} for subprocess)")
    print(f"{'':28s}{'run ms':>10s}{'overhead ms/step':>18s}{'x in-process':>14s}")
    for name, run_ms, per_step, ratio in rows:
        print(f"{name:28s}{run_ms:10.3f}{per_step:18.3f}{ratio:14.3f}")
    overhead = (median_ms(inproc) - step_time) / n
    print(f"goal <= 10 ms/step: {'met' if overhead <= 10 else 'MISSED'} ({overhead:.2f} ms)")
    rerun = median_ms(cached)
    print(f"goal <= 100 ms cached rerun: {'met' if rerun <= 100 else 'MISSED'} ({rerun:.1f} ms)")
    print("Argo, for scale: ~10 s per step (controller requeue + pod start), not measured here")


if __name__ == "__main__":
    main()

"""Wall time of `ctloop demo --quiet --json` on a fresh home, against the floor any first ctloop command pays.

    $V/bin/python bench/demo.py [--runs 3]

Side by side in one run, alternating so machine load affects both alike:
- baseline (floor): a fresh interpreter that imports the stack the demo uses (torch, mlflow, pandas,
  evidently, hera) and creates an empty embedded MLflow store (SQLite migrations) — a cost the demo
  cannot avoid;
- the demo: `ctloop demo --quiet --json --home <fresh dir>`, which must exit 0 (every story check kept).
Reported: medians of wall time, the demo's own wall time (`wall_s`, after imports), the time inside
its three workflow runs, CPU time of the child processes, and the ratio demo / floor. The goal is a
median demo wall time of at most 60 s on the 2-core machine. The load average is printed because
the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FLOOR = """
import torch, pandas, evidently, hera.workflows, mlflow
from mlflow import MlflowClient
MlflowClient({uri!r}).search_experiments()
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the child, and its stdout; fails loudly on a non-zero exit."""
    cpu = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, _children_cpu() - cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    floor_wall, floor_cpu, demo_wall, demo_cpu, inner, in_runs = [], [], [], [], [], []
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-demo-") as tmp:
        for i in range(args.runs):
            uri = f"sqlite:///{Path(tmp) / f'floor-{i}.db'}"
            wall, cpu, _ = timed([str(BIN / "python"), "-c", FLOOR.format(uri=uri)])
            floor_wall.append(wall)
            floor_cpu.append(cpu)
            wall, cpu, out = timed([str(BIN / "ctloop"), "demo", "--quiet", "--json", "--home", f"{tmp}/demo-{i}"])
            summary = json.loads(out)
            failed = [c["name"] for c in summary["checks"] if not c["ok"]]
            if failed:
                raise SystemExit(f"demo run {i} failed checks: {failed}")
            demo_wall.append(wall)
            demo_cpu.append(cpu)
            inner.append(summary["wall_s"])
            in_runs.append(sum(r["seconds"] or 0.0 for r in summary["runs"]))
            print(f"run {i}: floor {floor_wall[-1]:.1f}s, demo {wall:.1f}s (cpu {cpu:.1f}s, "
                  f"after imports {summary['wall_s']:.1f}s, in workflow runs {in_runs[-1]:.1f}s)", flush=True)
    med = statistics.median
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"{'':28}{'median':>10}")
    print(f"{'floor (imports + store)':28}{med(floor_wall):>9.1f}s   cpu {med(floor_cpu):.1f}s")
    print(f"{'ctloop demo':28}{med(demo_wall):>9.1f}s   cpu {med(demo_cpu):.1f}s")
    print(f"{'  of which after imports':28}{med(inner):>9.1f}s")
    print(f"{'  of which workflow runs':28}{med(in_runs):>9.1f}s")
    print(f"ratio demo / floor: {med(demo_wall) / med(floor_wall):.2f}x; goal <= 60 s: "
          f"{'met' if med(demo_wall) <= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""The registry-kept promotion lock vs the machine-local flock it replaced: acquire+release latency.

Run: $V/bin/python bench/promotion_lock.py [--reps 3] [--n 30]

One run starts an embedded MLflow registry (SQLite file, temp dir) and a real `mlflow server` over
another SQLite file, registers a model on each, then times N uncontended acquire+release cycles of
`ctloop.deploy.lock.model_lock` on each registry, and N of `fcntl.flock` on a file (the old lock,
which only excluded processes of one machine) as the baseline; repeats, and prints medians of the
reps' medians and the ratio to flock. A promotion makes about ten other registry calls besides.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ctloop.deploy.lock import model_lock
from ctloop.deploy.registry import Registry
from ctloop.kafka_local import free_port


def timed(n: int, cycle: Callable[[], None]) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        cycle()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def flock_cycle(path: Path) -> Callable[[], None]:
    def cycle() -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return cycle


def registry_cycle(registry: Registry, model: str) -> Callable[[], None]:
    def cycle() -> None:
        with model_lock(registry, model):
            pass
    return cycle


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, url = start_server(root)
        try:
            embedded, remote = Registry(f"sqlite:///{root / 'embedded.db'}"), Registry(url)
            for registry in (embedded, remote):
                registry.ensure_model("bench")
            cases = {"flock (old, one machine)": flock_cycle(root / "bench.lock"),
                     "registry lock, embedded SQLite": registry_cycle(embedded, "bench"),
                     "registry lock, mlflow server": registry_cycle(remote, "bench")}
            results: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.reps):
                for name, cycle in cases.items():
                    results[name].append(timed(args.n, cycle))
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    base = statistics.median(results["flock (old, one machine)"])
    print(f"acquire+release, median of {args.reps} reps x {args.n} cycles")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:34s} {median * 1000:9.3f} ms  x{median / base:,.0f}")


if __name__ == "__main__":
    main()

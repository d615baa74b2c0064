"""Predict endpoint vs the loaded pyfunc called directly: requests/s, p50/p99 latency, overhead ratios.

Run: $V/bin/python bench/serve.py [--reps 3] [--requests 400]

One run sets up an embedded MLflow registry (SQLite, temp dir), logs a small numpy logistic-regression
pyfunc (8 double features), registers it and makes it champion. The server (`ChampionFollower` +
`PredictionServer` + `PredictionLog` to an embedded bus, exactly what `ctloop serve` wires) runs in a
forked process, so client and server do not share a GIL. For each case (rows per request x client
threads) it times N requests over keep-alive connections, then the same batches through
`model.predict(DataFrame)` on the same loaded model in this process, and repeats; medians of the reps.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

FEATURES = [f"f{i}" for i in range(8)]
CASES = [(1, 1), (32, 1), (1, 4), (32, 4)]  # (rows per request, client threads)


def build_registry(root: Path) -> tuple[str, str]:
    import mlflow

    class Logistic(mlflow.pyfunc.PythonModel):
        def __init__(self, weights: np.ndarray, bias: float) -> None:
            self.weights, self.bias = weights, bias

        def predict(self, context, model_input, params=None):
            z = model_input[FEATURES].to_numpy(dtype=float) @ self.weights + self.bias
            return (1 / (1 + np.exp(-z)) > 0.5).astype(int)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # Without an explicit location the SQL store puts artifacts in ./mlruns of the current directory.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench-serve", artifact_location=str(root / "art")))
    example = pd.DataFrame(np.random.default_rng(0).normal(size=(4, 8)), columns=FEATURES)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Logistic(np.linspace(-1, 1, 8), 0.1),
                                       input_example=example, pip_requirements=[])
    from ctloop.deploy.promotion import promote
    from ctloop.deploy.registry import Registry

    registry = Registry(uri)
    version = registry.create_version("bench", info.model_uri, run_id=None, tags={}).version
    promote(registry, "bench", version, actor="bench", reason="bench", manual=True, lock_dir=root / "locks")
    return uri, version


def run_server(uri: str, root: Path, port_out) -> None:
    from ctloop.deploy.registry import Registry
    from ctloop.deploy.serving import ChampionFollower, PredictionLog, PredictionServer
    from ctloop.embedded_bus import EmbeddedBus

    follower = ChampionFollower(Registry(uri), "bench", poll_s=60)
    follower.refresh()
    server = PredictionServer(follower, PredictionLog(EmbeddedBus(root / "bus.db"), "predictions"))
    port_out.put(server.httpd.server_address[1])
    server.serve_forever()


def make_batches(rows: int, count: int) -> list[list[dict[str, float]]]:
    rng = np.random.default_rng(rows)
    return [[dict(zip(FEATURES, map(float, rng.normal(size=8)), strict=True)) for _ in range(rows)]
            for _ in range(count)]


def timed(threads: int, batches: list, call) -> tuple[float, list[float]]:
    """Requests per second and per-request latencies of `call` over `batches`, split across threads."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(part: list) -> None:
        local, state = [], {}
        for batch in part:
            start = time.perf_counter()
            call(batch, state)
            local.append(time.perf_counter() - start)
        with lock:
            latencies.extend(local)

    parts = [batches[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=worker, args=(p,)) for p in parts]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(batches) / (time.perf_counter() - start), latencies


def p(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        uri, version = build_registry(root)
        ctx = multiprocessing.get_context("fork")
        port_out = ctx.Queue()
        server = ctx.Process(target=run_server, args=(uri, root, port_out), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{port_out.get(timeout=120)}/predict"

        from ctloop.deploy.serving import load_version

        loaded = load_version(uri, "bench", version, root / "direct")

        def http_call(batch, state) -> None:
            session = state.setdefault("session", requests.Session())
            response = session.post(url, json={"rows": batch}, timeout=30)
            response.raise_for_status()

        def direct_call(batch, _state) -> None:
            loaded.model.predict(pd.DataFrame(batch, columns=FEATURES))

        print(f"{'rows':>4} {'thr':>3} | {'http rps':>9} {'p50 ms':>7} {'p99 ms':>7} | {'direct rps':>10}"
              f" {'p50 ms':>7} {'p99 ms':>7} | {'rps ratio':>9} {'p99 ratio':>9}")
        try:
            for rows, threads in CASES:
                batches = make_batches(rows, args.requests)
                timed(threads, batches[:20], http_call)  # warm connections and caches
                http_rps, http_p50, http_p99, dir_rps, dir_p50, dir_p99 = [], [], [], [], [], []
                for _ in range(args.reps):
                    rps, lat = timed(threads, batches, http_call)
                    http_rps.append(rps)
                    http_p50.append(p(lat, 0.5))
                    http_p99.append(p(lat, 0.99))
                    rps, lat = timed(threads, batches, direct_call)
                    dir_rps.append(rps)
                    dir_p50.append(p(lat, 0.5))
                    dir_p99.append(p(lat, 0.99))
                m = statistics.median
                print(f"{rows:>4} {threads:>3} | {m(http_rps):>9.0f} {m(http_p50):>7.2f} {m(http_p99):>7.2f} |"
                      f" {m(dir_rps):>10.0f} {m(dir_p50):>7.2f} {m(dir_p99):>7.2f} |"
                      f" {m(dir_rps) / m(http_rps):>8.2f}x {m(http_p99) / m(dir_p99):>8.2f}x")
        finally:
            server.terminate()
            server.join(timeout=10)


if __name__ == "__main__":
    main()

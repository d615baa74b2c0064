"""Serving side by side: ctloop serving vs `mlflow models serve` vs the old stdlib server vs the bare pyfunc.

Run: $V/bin/python bench/serve.py [--reps 3] [--requests 300] [--old-commit 8e66572] [--shadow]

One run builds an embedded MLflow registry (SQLite, temp dir), logs a scikit-learn logistic regression
on the breast-cancer table (30 double features), registers it as version 1 and makes it champion. Then,
on that one registered version:

- ctloop: `ctloop.deploy.serving.serving()` (what `ctloop serve` runs: ASGI on uvicorn, follower,
  prediction log to an embedded bus), in a forked process;
- mlflow: `mlflow models serve -m models:/bench/1 --env-manager local --workers 1` (FastAPI on uvicorn);
- old: the stdlib `ThreadingHTTPServer` serving of `--old-commit` (read from git history, not kept in the
  tree), with its prediction log, in a forked process; skipped when git cannot show it;
- direct: `model.predict(DataFrame)` on the same loaded pyfunc in this process (no HTTP, no JSON);
- shadow (with `--shadow`): ctloop serving as above with `shadow="challenger"`, the same model registered
  again as version 2 under that alias, so its extra cost per request is the shadow's scoring and logging
  (`ctloop serve --shadow`).

The client is asyncio + aiohttp in this process, one keep-alive connection per concurrent client, each
client sending its share of the requests back to back. Every server gets the same MLflow payload
(`dataframe_split`); the old server gets the same rows as `{"rows": [...]}`, its only format. For each
case (clients 1, 8, 32 x rows per request 1, 100) and rep, servers run one after another; medians of the
reps are printed, with ctloop's ratios to the others.

At one client a third line pairs ctloop with the bare call request by request: one request to ctloop
(a blocking keep-alive `http.client` connection), then `predict` on the same rows, alternating over every
rep's requests, so both see the machine in the same state. The bare call's own p50 moves ±30% between
runs minutes apart, which the side-by-side ratio above inherits; the paired one does not.

`--components` prints instead what one request costs in CPU, part by part, at 1 and 100 rows (best
of 15 blocks of 40 calls, in this process): the bare pyfunc call and its schema enforcement, and
serving's two paths (the float64 matrix of an all-double signature, and the row-by-row path every
other request takes, which is what serving did for every request before the matrix path).

Under each case a second line gives CPU milliseconds per request, which other load on the machine
moves far less than latency: the forked servers' own processes (every thread, also those that ended,
from /proc/PID/stat), the client's event-loop thread, and the direct calls' threads.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import requests

CLIENTS = (1, 8, 32)
ROWS = (1, 100)
REPO = Path(__file__).resolve().parents[1]


def build_registry(root: Path, shadow: bool = False) -> tuple[str, pd.DataFrame]:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer(as_frame=True)
    features = data.frame.drop(columns="target").rename(columns=lambda c: c.replace(" ", "_"))
    model = LogisticRegression(max_iter=5000).fit(features, data.target)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # Without an explicit location the SQL store puts artifacts in ./mlruns of the current directory.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench-serve", artifact_location=str(root / "art")))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(3), pip_requirements=[])
    from ctloop.deploy.promotion import promote
    from ctloop.deploy.registry import Registry

    registry = Registry(uri)
    version = registry.create_version("bench", info.model_uri, run_id=None, tags={}).version
    promote(registry, "bench", version, actor="bench", reason="bench", manual=True)
    if shadow:
        # The same model as a second version under `challenger`: the shadow's cost is a second scoring and its
        # log (a shadow of the champion's own version is idle).
        challenger = registry.create_version("bench", info.model_uri, run_id=None, tags={}).version
        registry.set_alias("bench", "challenger", challenger)
    return uri, features


def run_ctloop(uri: str, root: Path, port: int, shadow: str | None = None) -> None:
    from ctloop.deploy.serving import serving
    from ctloop.embedded_bus import EmbeddedBus

    bus = EmbeddedBus(root / f"bus-{'shadow' if shadow else 'ctloop'}.db")
    with serving(uri, "bench", port=port, poll_s=60, bus=bus, predictions_topic="predictions",
                 shadow=shadow) as server:
        server.serve_forever()


def old_module(commit: str, root: Path):
    """The serving module as it was at `commit`, or None when git cannot show it."""
    if shutil.which("git") is None:
        return None
    shown = subprocess.run(["git", "show", f"{commit}:deploy/serving.py"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    path = root / "old_serving.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("old_serving", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_serving"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_old(uri: str, root: Path, port: int, commit: str) -> None:
    from ctloop.deploy.registry import Registry
    from ctloop.embedded_bus import EmbeddedBus

    old = old_module(commit, root)
    follower = old.ChampionFollower(Registry(uri), "bench", poll_s=60)
    follower.refresh()
    log = old.PredictionLog(EmbeddedBus(root / "bus-old.db"), "predictions")
    old.PredictionServer(follower, log, port=port).serve_forever()


def mlflow_script() -> Path:
    """The `mlflow` command of this interpreter's venv, or of the venv that holds the mlflow package (a light
    venv layered over a shared one has neither it nor uvicorn in its own bin)."""
    import mlflow

    for candidate in (Path(sys.executable).with_name("mlflow"), Path(mlflow.__file__).parents[4] / "bin" / "mlflow"):
        if candidate.exists():
            return candidate
    found = shutil.which("mlflow")
    if found is None:
        raise RuntimeError("no mlflow command found next to this Python or the mlflow package")
    return Path(found)


def start_mlflow(uri: str, root: Path, port: int) -> subprocess.Popen:
    mlflow_bin = mlflow_script()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{mlflow_bin.resolve().parent}:{os.environ['PATH']}"}
    with open(root / "mlflow-serve.log", "wb") as log:
        return subprocess.Popen(
            [str(mlflow_bin), "models", "serve", "-m", "models:/bench/1", "--env-manager", "local", "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root,
        )


def wait_ready(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code in (200, 404, 405):
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def free_port() -> int:
    from ctloop.kafka_local import free_port as pick

    return pick()


def cpu_ns(pid: int) -> int:
    """CPU time (user + system) used so far by process `pid`, threads that ended included; 0 where /proc
    does not tell it. Clock ticks (10 ms): a case's few hundred requests take hundreds of them."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def drive_measured(url: str, bodies: list[bytes], clients: int, pid: int | None) -> tuple[float, list[float], dict]:
    """`drive`, and the CPU ms per answered request of the client and (given its pid) the server."""
    server_before, client_before = cpu_ns(pid) if pid else 0, time.thread_time_ns()
    rps, latencies = asyncio.run(drive(url, bodies, clients))
    cpu = {"client": (time.thread_time_ns() - client_before) / 1e6 / max(len(latencies), 1)}
    if pid:
        cpu["server"] = (cpu_ns(pid) - server_before) / 1e6 / max(len(latencies), 1)
    return rps, latencies, cpu


async def drive(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Requests/s and per-request latencies of `bodies` POSTed by `clients` concurrent keep-alive clients."""
    import aiohttp

    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    failures: list[str] = []

    async def client(session: aiohttp.ClientSession, part: list[bytes]) -> None:
        for body in part:
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
            except (aiohttp.ClientError, RuntimeError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session, bodies[i::clients]) for i in range(clients)))
        elapsed = time.perf_counter() - start
    if failures:
        print(f"  {url}: {len(failures)} of {len(bodies)} requests failed, e.g. {failures[0]}", flush=True)
    return len(latencies) / elapsed, latencies


def direct(model, frames: list[pd.DataFrame], clients: int) -> tuple[float, list[float], dict]:
    latencies: list[float] = []
    cpu: list[int] = []
    lock = threading.Lock()

    def worker(part: list[pd.DataFrame]) -> None:
        local = []
        started = time.thread_time_ns()
        for frame in part:
            start = time.perf_counter()
            model.predict(frame)
            local.append(time.perf_counter() - start)
        used = time.thread_time_ns() - started
        with lock:
            latencies.extend(local)
            cpu.append(used)

    threads = [threading.Thread(target=worker, args=(frames[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(frames) / (time.perf_counter() - start), latencies, {"server": sum(cpu) / 1e6 / len(frames)}


def paired(url: str, bodies: list[bytes], frames: list[pd.DataFrame], model) -> tuple[list[float], list[float]]:
    """Latencies of ctloop's answer and of the bare `predict` on the same rows, taken alternately."""
    host, _, rest = url.removeprefix("http://").partition("/")
    connection = http.client.HTTPConnection(*host.split(":"))
    served, bare = [], []
    try:
        for body, frame in zip(bodies, frames, strict=True):
            start = time.perf_counter()
            connection.request("POST", "/" + rest, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
            served.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.predict(frame)
            bare.append(time.perf_counter() - start)
    finally:
        connection.close()
    return served, bare


def components(uri: str, root: Path, features: pd.DataFrame) -> None:
    from ctloop.deploy.serving import load_version

    loaded = load_version(uri, "bench", "1", root / "components")
    print(f"load average at start: {os.getloadavg()[0]:.1f}; CPU ms per request, best of 15 x 40 calls", flush=True)
    for count in ROWS:
        print(f"{count} rows per request", flush=True)
        for name, call in component_calls(loaded, features.sample(count, random_state=0).reset_index(drop=True)):
            call()
            best = float("inf")
            for _ in range(15):
                start = time.thread_time()
                for _ in range(40):
                    call()
                best = min(best, (time.thread_time() - start) / 40)
            print(f"  {name:<48} {best * 1000:6.3f}", flush=True)


def component_calls(loaded, frame: pd.DataFrame) -> list[tuple[str, object]]:
    from datetime import UTC, datetime

    from mlflow.models.utils import _enforce_schema

    from ctloop.deploy.scoring import Features, parse_request
    from ctloop.deploy.serving import _predict, served_batch
    from ctloop.predictions import PredictionBatch

    rows_only = Features(loaded.features.names, loaded.features.required)  # what a non-double signature gets
    schema = loaded.model.metadata.get_input_schema()
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    matrix, by_rows = parse_request(body, loaded.features), parse_request(body, rows_only)
    enforced = _enforce_schema(frame, schema)
    predictions = _predict(loaded, matrix)
    ids = [f"{'0' * 32}-{i}" for i in range(len(frame))]
    return [
        ("direct: pyfunc.predict(frame)", lambda: loaded.model.predict(frame)),
        ("  its schema enforcement", lambda: _enforce_schema(frame, schema)),
        ("  the model on the enforced frame", lambda: loaded.model._model_impl.predict(enforced)),
        ("matrix path: parse", lambda: parse_request(body, loaded.features)),
        ("matrix path: frame + predict", lambda: _predict(loaded, matrix)),
        ("row path: parse", lambda: parse_request(body, rows_only)),
        ("row path: frame + predict", lambda: _predict(replace(loaded, prechecked=None), by_rows)),
        ("reply encoding", lambda: json.dumps({"predictions": predictions, "ids": ids}).encode()),
        ("log thread: columnar batch + encoding", lambda: served_batch(
            "bench", "1", parse_request(body, loaded.features), predictions, ids, datetime.now(UTC)).to_bytes()),
        ("log thread, rows form (before): rows + encoding", lambda: PredictionBatch.model_construct(
            model="bench", version="1", rows=parse_request(body, loaded.features).rows, predictions=predictions,
            ids=ids, ts=datetime.now(UTC)).to_bytes()),
        ("  of which parse (not on the log thread)", lambda: parse_request(body, loaded.features)),
    ]


def ms(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--old-commit", default="8e66572", help="commit whose stdlib server is the 'old' column")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="rows per request, one case each")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="concurrent clients")
    parser.add_argument("--components", action="store_true", help="CPU per request, part by part; no servers")
    parser.add_argument("--shadow", action="store_true",
                        help="add ctloop serving with a shadow (challenger: the same model as version 2) as a column")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        uri, features = build_registry(root, args.shadow)
        if args.components:
            components(uri, root, features)
            return
        ctx = multiprocessing.get_context("fork")
        urls: dict[str, str] = {}
        children: dict = {}
        port = free_port()
        children["ctloop"] = ctx.Process(target=run_ctloop, args=(uri, root, port), daemon=True)
        urls["ctloop"] = f"http://127.0.0.1:{port}"
        if args.shadow:
            port = free_port()
            children["shadow"] = ctx.Process(target=run_ctloop, args=(uri, root, port, "challenger"), daemon=True)
            urls["shadow"] = f"http://127.0.0.1:{port}"
        if old_module(args.old_commit, root) is not None:
            port = free_port()
            children["old"] = ctx.Process(target=run_old, args=(uri, root, port, args.old_commit), daemon=True)
            urls["old"] = f"http://127.0.0.1:{port}"
        for child in children.values():
            child.start()
        port = free_port()
        mlflow_proc = start_mlflow(uri, root, port)
        urls["mlflow"] = f"http://127.0.0.1:{port}"
        try:
            wait_ready(urls["ctloop"] + "/ping")
            wait_ready(urls["mlflow"] + "/ping")
            if "shadow" in urls:
                wait_ready(urls["shadow"] + "/ping")
            if "old" in urls:
                wait_ready(urls["old"] + "/health")
            from ctloop.deploy.serving import load_version

            model = load_version(uri, "bench", "1", root / "direct").model
            print(f"load average at start: {os.getloadavg()[0]:.1f}; {args.reps} reps x {args.requests} requests; "
                  f"servers: {', '.join(urls)} + direct", flush=True)
            header = f"{'rows':>4} {'cli':>3} | " + " | ".join(
                f"{name:>6} rps  p50  p99" for name in [*urls, "direct"]) + " | ctloop/mlflow rps, /old rps, p50/direct"
            print(header, flush=True)
            pids = {name: child.pid for name, child in children.items()}
            for rows in args.rows:
                for clients in args.clients:
                    report(rows, clients, features, urls, pids, model, args)
            print(f"load average at end: {os.getloadavg()[0]:.1f}", flush=True)
            if "shadow" in urls:
                # What the shadow did with the requests it was handed (logged, dropped when its queue was full).
                shown = [line for line in requests.get(urls["shadow"] + "/metrics", timeout=10).text.splitlines()
                         if line.startswith("ctloop_serving_shadow_batches_total")]
                print("shadow: " + "; ".join(shown), flush=True)
        finally:
            for child in children.values():
                child.terminate()
                child.join(timeout=10)
            os.killpg(mlflow_proc.pid, signal.SIGTERM)
            mlflow_proc.wait(timeout=30)


def report(rows: int, clients: int, features: pd.DataFrame, urls: dict[str, str], pids: dict[str, int], model,
           args) -> None:
    rng = np.random.default_rng(rows * 100 + clients)
    frames = [features.sample(rows, replace=True, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)
              for _ in range(args.requests)]
    split = [json.dumps({"dataframe_split": f.to_dict(orient="split")}).encode() for f in frames]
    legacy = [json.dumps({"rows": f.to_dict(orient="records")}).encode() for f in frames]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in [*urls, "direct"]}
    cpu: dict[str, list[dict]] = {name: [] for name in results}
    for name, url in urls.items():  # warm connections and caches
        asyncio.run(drive(url + ("/predict" if name == "old" else "/invocations"),
                          (legacy if name == "old" else split)[:20], clients))
    for _ in range(args.reps):
        for name, url in urls.items():
            rps, lat, used = drive_measured(url + ("/predict" if name == "old" else "/invocations"),
                                            legacy if name == "old" else split, clients, pids.get(name))
            results[name].append((rps, ms(lat, 0.5), ms(lat, 0.99)))
            cpu[name].append(used)
        rps, lat, used = direct(model, frames, clients)
        results["direct"].append((rps, ms(lat, 0.5), ms(lat, 0.99)))
        cpu["direct"].append(used)
    med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for name, runs in results.items()}
    cells = " | ".join(f"{med[n][0]:>10.0f} {med[n][1]:>4.1f} {med[n][2]:>4.1f}" for n in med)
    ratios = f"{med['ctloop'][0] / med['mlflow'][0]:.2f}x"
    ratios += f", {med['ctloop'][0] / med['old'][0]:.2f}x" if "old" in med else ", -"
    ratios += f", {med['ctloop'][1] / med['direct'][1]:.2f}x"
    if "shadow" in med:
        ratios += (f"; shadow adds p50 {med['shadow'][1] - med['ctloop'][1]:+.2f} ms, "
                   f"p99 {med['shadow'][2] - med['ctloop'][2]:+.2f} ms")
    print(f"{rows:>4} {clients:>3} | {cells} | {ratios}", flush=True)
    per = {name: {part: statistics.median(u[part] for u in used) for part in used[0]} for name, used in cpu.items()}
    parts = ", ".join(f"{name} " + " + ".join(f"{part} {v:.2f}" for part, v in p.items()) for name, p in per.items())
    print(f"{'':>8} | cpu ms/request: {parts}", flush=True)
    if clients == 1:
        served, bare = paired(urls["ctloop"] + "/invocations", split * args.reps, frames * args.reps, model)
        ratios = sorted(a / b for a, b in zip(served, bare, strict=True))
        print(f"{'':>8} | paired, alternating ({len(served)} pairs): ctloop p50 {ms(served, 0.5):.2f} ms, direct p50 "
              f"{ms(bare, 0.5):.2f} ms, p50/direct {ms(served, 0.5) / ms(bare, 0.5):.2f}x, median pair ratio "
              f"{statistics.median(ratios):.2f}x", flush=True)


if __name__ == "__main__":
    main()

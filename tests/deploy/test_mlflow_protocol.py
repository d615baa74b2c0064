"""An MLflow scoring client gets the same predictions from ctloop serving as from `mlflow models serve`.

Both serve the same registered version (a scikit-learn classifier on the breast-cancer table) from the
real `mlflow server`; the client is MLflow's own `ScoringServerClient` and plain HTTP with each of the
payloads MLflow documents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.deploy.serving import serving
from ctloop.kafka_local import free_port

pytestmark = pytest.mark.mlflow_server

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.frame.drop(columns="target").rename(columns=lambda c: c.replace(" ", "_")), data.target


@pytest.fixture(scope="module")
def registered(mlflow_server: str, table) -> tuple[str, str]:
    """A logistic regression registered as version 1 of a fresh model name and made champion."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, target = table
    model = LogisticRegression(max_iter=5000).fit(features, target)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctloop-protocol-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(3), pip_requirements=[])
    name = f"bc-{os.getpid()}-{int(time.time())}"
    registry = Registry(mlflow_server)
    version = registry.create_version(name, info.model_uri, run_id=None, tags={}).version
    promote(registry, name, version, actor="test", reason="protocol", manual=True)
    return name, version


@pytest.fixture(scope="module")
def mlflow_serve(mlflow_server: str, registered, tmp_path_factory) -> Iterator[str]:
    """`mlflow models serve` of the same version, in the current environment."""
    name, version = registered
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(MLFLOW), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
                                                       # it runs `uvicorn` from PATH: the one beside mlflow
                                                       "PATH": f"{MLFLOW.resolve().parent}:{os.environ['PATH']}"},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve not ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def ctloop_serve(mlflow_server: str, registered) -> Iterator[str]:
    name, _ = registered
    with serving(mlflow_server, name, poll_s=30.0) as server:
        server.start()
        yield server.url
        server.stop()


def payloads(rows: pd.DataFrame) -> dict[str, dict]:
    records = rows.to_dict(orient="records")
    return {
        "dataframe_split": {"dataframe_split": rows.to_dict(orient="split")},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs (columns)": {"inputs": rows.to_dict(orient="list")},
        "inputs with params": {"inputs": records, "params": {}},
    }


def test_every_documented_payload_gets_the_same_predictions(ctloop_serve, mlflow_serve, table):
    rows = table[0].sample(40, random_state=1)
    for label, payload in payloads(rows).items():
        theirs = requests.post(f"{mlflow_serve}/invocations", json=payload, timeout=60)
        ours = requests.post(f"{ctloop_serve}/invocations", json=payload, timeout=60)
        assert theirs.status_code == 200, (label, theirs.text[:500])
        assert ours.status_code == 200, (label, ours.text[:500])
        assert ours.json()["predictions"] == theirs.json()["predictions"], label
    assert set(theirs.json()["predictions"]) == {0, 1}, "a real classifier, not a constant"


def test_mlflows_scoring_client_reads_both_servers_alike(ctloop_serve, mlflow_serve, table):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    rows = table[0].sample(25, random_state=2)
    answers = []
    for url in (ctloop_serve, mlflow_serve):
        client = ScoringServerClient("127.0.0.1", url.rsplit(":", 1)[1])
        client.wait_server_ready(timeout=30)
        answers.append(client.invoke(rows).get_predictions(predictions_format="ndarray").tolist())
    assert answers[0] == answers[1]


def test_both_refuse_a_missing_column_but_ctloop_names_it(ctloop_serve, mlflow_serve, table):
    rows = table[0].head(2).drop(columns="mean_radius")
    payload = {"dataframe_split": rows.to_dict(orient="split")}
    theirs = requests.post(f"{mlflow_serve}/invocations", json=payload, timeout=60)
    ours = requests.post(f"{ctloop_serve}/invocations", json=payload, timeout=60)
    assert theirs.status_code == ours.status_code == 400
    assert "missing features ['mean_radius']" in ours.json()["error"]

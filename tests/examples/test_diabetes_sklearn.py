"""A user's project written from the README and docs/trainers.md alone (examples/diabetes_sklearn: a
scikit-learn regressor, no torch, on a data set no other example uses), run through the commands a user types:
`ctloop run retrain`, then `ctloop sensor run` on the real broker with `ctloop emit data-arrived`.

The same data again is refused as already run; an edit to the trainer's code with the same data is a new run
and a new version with the new code version in its lineage; the edited code again is refused as already run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ctloop.deploy.registry import CHAMPION, Registry
from ctloop.sensors.local.decisions import DecisionRow, list_decisions
from ctloop.settings import Settings, Topics
from ctloop.workflows.engine import FINAL_STATUSES
from ctloop.workflows.local.run_store import RunStore
from tests.examples.loop import EXAMPLES

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]
CTLOOP = [str(Path(sys.executable).parent / "ctloop")]
MODEL = "diabetes"


class User:
    """A shell with the project on PYTHONPATH (as `pip install -e` would put it) and CTLOOP_* settings."""

    def __init__(self, tmp_path: Path, kafka_bootstrap: str) -> None:
        self.project = tmp_path / "project"
        shutil.copytree(EXAMPLES / "diabetes_sklearn", self.project)
        tag = tmp_path.name[-12:].replace("_", "-")
        self.settings = Settings(home=tmp_path / "home", bus="kafka", kafka_bootstrap=kafka_bootstrap,
                                 topics=Topics(data=f"data-{tag}", drift=f"drift-{tag}", deadletter=f"dead-{tag}",
                                               models=f"models-{tag}", runs=f"runs-{tag}",
                                               predictions=f"predictions-{tag}"))
        self.env = {**os.environ, "PYTHONPATH": f"{self.project}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"),
                    "CTLOOP_HOME": str(self.settings.home), "CTLOOP_BUS": "kafka",
                    "CTLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
                    **{f"CTLOOP_TOPICS__{k.upper()}": v for k, v in self.settings.topics.model_dump().items()}}
        (self.settings.home / "specs").mkdir(parents=True)
        shutil.copy(self.project / "spec.json", self.settings.home / "specs" / f"{MODEL}.json")

    def ctloop(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([*CTLOOP, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"ctloop {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def write_batch(self, directory: Path, name: str, start: int, stop: int) -> None:
        code = (f"from diabetes_sklearn.data import write_batch; from pathlib import Path; "
                f"write_batch(Path({str(directory)!r}), {name!r}, {start}, {stop})")
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True, timeout=120)

    def arrive(self, uri: str, timeout_s: float = 300.0) -> DecisionRow:
        """`ctloop emit data-arrived`; the sensor's decision once any run it started has ended."""
        event_id = self.ctloop("emit", "data-arrived", "--model", MODEL, "--uri", uri).strip().splitlines()[-1]
        deadline = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < deadline, f"the sensor never decided on event {event_id}"
            decided = [d for d in list_decisions(self.settings.state_db, event_id=event_id)
                       if d.kind in ("triggered", "deduped", "rejected")]
            if decided:
                break
            time.sleep(0.5)
        decision = decided[0]
        if decision.kind == "triggered":
            store = RunStore(self.settings.state_db)
            try:
                while store.get(decision.run_id).status not in FINAL_STATUSES:
                    assert time.monotonic() < deadline, f"run {decision.run_id} did not end"
                    time.sleep(0.5)
            finally:
                store.close()
        return decision

    def run(self, run_id: str):
        store = RunStore(self.settings.state_db)
        try:
            return store.get(run_id)
        finally:
            store.close()


def test_a_users_sklearn_regressor_runs_through_run_retrain_and_the_sensor(tmp_path: Path,
                                                                           kafka_bootstrap: str) -> None:
    user = User(tmp_path, kafka_bootstrap)
    data = tmp_path / "store" / "diabetes"
    user.write_batch(data, "2026-01", 0, 300)

    retrained = json.loads(user.ctloop("run", "retrain", "--model", MODEL, "--data", str(data)).splitlines()[-1])
    assert retrained["status"] == "Succeeded", user.ctloop("runs", "show", retrained["run_id"])
    registry = Registry(user.settings.tracking_uri)
    assert registry.alias(MODEL, CHAMPION) == "1"
    first = registry.version(MODEL, "1")
    assert float(first.tags["ctloop.metric.r2"]) > 0.2 and "ctloop.metric.rmse" in first.tags
    run = MlflowClient(user.settings.tracking_uri).get_run(first.run_id)
    assert run.data.tags["ctloop.trainer"] == "diabetes_sklearn.train:train" and "val_mae" in run.data.metrics

    # The registered version loads in a process that never had the project on its path (it was logged as code).
    holdout = tmp_path / "unseen.parquet"
    user.write_batch(holdout.parent, holdout.stem, 400, 442)
    predicted = subprocess.run(
        [sys.executable, "-c", "import sys, mlflow, pandas as pd; mlflow.set_tracking_uri(sys.argv[1]); "
         "m = mlflow.pyfunc.load_model('models:/diabetes@champion'); "
         "print(list(m.predict(pd.read_parquet(sys.argv[2]).drop(columns=['patient', 'progression']))))",
         user.settings.tracking_uri, str(holdout)],
        capture_output=True, text=True, timeout=120, env={k: v for k, v in user.env.items() if k != "PYTHONPATH"})
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    values = [float(v.removeprefix("np.float64(").rstrip(")")) for v in
              predicted.stdout.strip().strip("[]").split(", ")]
    truth = pd.read_parquet(holdout)["progression"]
    assert len(values) == 42 and sum(abs(v - t) for v, t in zip(values, truth, strict=True)) / 42 < 70

    sensor = subprocess.Popen([*CTLOOP, "sensor", "run", "--group", "user-sensor"], env=user.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # `run retrain` named its data by URI and event; the sensor's key names the digest: a new run, whose
        # train step is served from the memo cache (same data, same code), and which registers no second
        # version: a version is registered once per lineage (model, data digest, code version).
        same = user.arrive(str(data))
        assert same.kind == "triggered", same.reason
        assert user.run(same.run_id).status == "Succeeded", user.ctloop("runs", "show", same.run_id)
        assert user.run(same.run_id).step("train").cached
        assert [v.version for v in registry.versions(MODEL)] == ["1"]
        again = user.arrive(str(data))
        assert again.kind == "deduped" and "already" in again.reason, again.reason

        train_py = user.project / "diabetes_sklearn" / "train.py"
        train_py.write_text(train_py.read_text().replace("random_state=ctx.seed)",
                                                         "random_state=ctx.seed, subsample=0.9)"))
        time.sleep(1.2)  # a running sensor re-hashes a trainer's package at most once a second (docs/trainers.md)
        edited = user.arrive(str(data))
        assert edited.kind == "triggered", f"changed trainer code was refused: {edited.reason}"
        assert user.run(edited.run_id).status == "Succeeded", user.ctloop("runs", "show", edited.run_id)
        assert not user.run(edited.run_id).step("train").cached
        versions = {v.version: v for v in registry.versions(MODEL)}
        assert sorted(versions) == ["1", "2"]
        assert versions["2"].tags["ctloop.data_digest"] == first.tags["ctloop.data_digest"]
        assert versions["2"].tags["ctloop.code_version"] != first.tags["ctloop.code_version"]
        assert versions["2"].tags["ctloop.event_id"] == edited.event_id
        assert versions["2"].decision in ("promote", "reject") and versions["2"].reasons
        unchanged = user.arrive(str(data))
        assert unchanged.kind == "deduped", f"unchanged code and data ran again: {unchanged.reason}"
    finally:
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=60)
    assert sensor.returncode == 0, err[-3000:]

"""The rendered Go templates (sprig, as Argo Events executes them) compute what LocalSensor computes.

The harness in gotemplate/ runs text/template with sprig's FuncMap on `{"Input": <event data>}`, as
the Argo Events sensor does for `dataTemplate`. Skipped where Go or its modules are unavailable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctloop.modelspec import ModelSpec
from ctloop.sensors.catalog import ClusterEndpoints, cluster_sensors, schedule_sensors
from ctloop.sensors.eventdata import as_text, calendar_event_data, lookup
from ctloop.sensors.manifests import WORKFLOW_PARAMETERS, sensor
from ctloop.sensors.mapping import parameters
from ctloop.settings import Settings

HARNESS = Path(__file__).parent / "gotemplate"


@pytest.fixture(scope="module")
def gotemplate(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain on PATH")
    binary = tmp_path_factory.mktemp("gotemplate") / "gotemplate"
    build = subprocess.run([go, "build", "-o", str(binary), "."], cwd=HARNESS, capture_output=True, text=True,
                           timeout=600)
    if build.returncode != 0:
        pytest.skip(f"cannot build the Go template harness (modules unavailable?): {build.stderr[-500:]}")

    def run(jobs: list[tuple[str, object]]) -> list[str]:
        payload = json.dumps([{"template": t, "data": d} for t, d in jobs])
        done = subprocess.run([str(binary)], input=payload, capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)

    return run


def _arrival(model: str, digest: str | None) -> dict:
    data = {"model": model, "uri": f"s3://b/{model}/x.parquet"} | ({"digest": digest} if digest else {})
    return {"topic": "ctloop.data", "partition": 0, "body": {"id": "ev-1", "type": "ctloop.data.arrived",
                                                             "data": data}}


SAMPLES = {
    "ctloop-data-arrived": [_arrival("churn", "abc"), _arrival("Churn_Model.v2", None), _arrival("--x--", "d")],
    "ctloop-drift": [{"topic": "ctloop.drift", "body": {"id": "dr-1", "type": "ctloop.drift.detected", "data": {
        "model": "churn", "dataset_drift": True, "rows": 10, "data_uri": "s3://b/live/"}}}],
    "ctloop-minio": [{"notification": [{"eventName": "s3:ObjectCreated:Put", "s3": {
        "bucket": {"name": "ctloop-data"}, "object": {"key": "incoming/churn/p1.parquet", "eTag": "e1"}}}]}],
    "ctloop-manual": [{"header": {}, "body": {"model": "churn", "uri": "s3://b/k", "digest": "abc"}}],
    # A tick as Argo Events sends it (no digest: the key falls back to the tick's time), and as the local
    # sensor maps it once it has snapshotted the prefix and written the digest in.
    "ctloop-schedule-churn-model-v2": [
        {"eventTime": "2026-11-30 03:00:00.000412 +0000 UTC m=+3600.001",
         "metadata": {"model": "Churn_Model.v2", "uri": "s3://b/incoming/churn/", "gpu": "false"}},
        calendar_event_data(datetime(2026, 11, 30, 3, tzinfo=UTC), (("model", "Churn_Model.v2"),
                                                                    ("uri", "s3://b/incoming/churn/")))
        | {"digest": "d1"},
    ],
}
SCHEDULED = ModelSpec.model_validate({"name": "Churn_Model.v2", "data": {"features": [{"name": "x"}], "label": "y"},
                                      "schedule": {"cron": "0 4 * * *", "timezone": "Europe/Berlin",
                                                   "data_uri": "s3://b/incoming/churn/"}})


def test_every_rendered_parameter_matches_the_local_mapping(gotemplate):
    version = "ghcr.io/ctloop/ctloop:test"
    specs = (*cluster_sensors(Settings(), version, ClusterEndpoints()), *schedule_sensors([SCHEDULED], version))
    jobs, expected = [], []
    for spec in specs:
        rendered = sensor(spec, "ctloop")["spec"]["triggers"][0]["template"]["argoWorkflow"]["parameters"]
        for data in SAMPLES[spec.name]:
            local = parameters(spec, data, {"id": "ctx-id"})
            for param in rendered:
                dest, src = param["dest"], param["src"]
                name = ("workflow-name" if dest == "metadata.name"
                        else WORKFLOW_PARAMETERS[int(dest.split(".")[3])])
                if "dataTemplate" in src:
                    jobs.append((src["dataTemplate"], data))
                    expected.append((spec.name, name, local[name]))
                elif "dataKey" in src:
                    assert as_text(lookup(data, src["dataKey"])) == local[name]
    assert len(jobs) >= 10
    got = gotemplate(jobs)
    mismatches = [(s, n, want, have) for (s, n, want), have in zip(expected, got, strict=True) if want != have]
    assert mismatches == []

"""The rendered Argo Events sensors do with any event what LocalSensor does: refuse it, or submit the same Workflow.

The Go harness in gotemplate/ evaluates the rendered dependency filters and resolves each rendered trigger
parameter (`dataTemplate` and `dataKey` alike) the way the Argo Events sensor does (text/template + sprig +
gjson + govaluate); the same event goes through `ctloop.sensors.filters` and `ctloop.sensors.mapping`.
The events are generated: unicode and long model names, missing and null fields, numbers, numbers written as
strings, booleans. Either both engines refuse the event (at the filters or in the mapping) or both fill in the
same value for every parameter, the Workflow name included. Skipped only where `go` is not on PATH; a
harness that does not build fails the test.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctloop.modelspec import ModelSpec
from ctloop.sensors.catalog import ClusterEndpoints, cluster_sensors, schedule_sensors
from ctloop.sensors.eventdata import calendar_event_data
from ctloop.sensors.filters import rejection
from ctloop.sensors.gateway import admission_payload
from ctloop.sensors.manifests import sensor
from ctloop.sensors.mapping import MappingError
from ctloop.sensors.spec import SensorSpec
from ctloop.sensors.versions import CodeVersions
from ctloop.settings import Settings
from ctloop.workflows.engine import idempotency_key
from tests.sensors.gotemplate_runner import GoBuildFailed, GoResolver, build

VERSION = "ghcr.io/ctloop/ctloop:test"
SCHEDULED = ModelSpec.model_validate({"name": "Churn_Model.v2", "data": {"features": [{"name": "x"}], "label": "y"},
                                      "schedule": {"cron": "0 4 * * *", "timezone": "Europe/Berlin",
                                                   "data_uri": "s3://b/incoming/churn/"}})
# Models with a trainer of their own: their keys name its code version too (sprig `get` on a rendered map).
OWN_CODE = {"Churn_Model.v2": f"{VERSION}+trainer:sha256:0a1b", "churn": f"{VERSION}+trainer:sha256:2c3d",
            "x--": f"{VERSION}+trainer:sha256:4e5f", "0": f"{VERSION}+trainer:sha256:6a7b"}
VERSIONS = CodeVersions(VERSION, OWN_CODE)
SPECS = {s.name: s for s in (*cluster_sensors(Settings(), VERSIONS, ClusterEndpoints()),
                             *schedule_sensors([SCHEDULED], VERSIONS))}
SPECS_SHARED = {s.name: s for s in cluster_sensors(Settings(), VERSION, ClusterEndpoints())}
CONTEXT = {"id": "ctx-id", "source": "ctloop", "type": "t", "subject": ""}


@pytest.fixture(scope="module")
def go():
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain on PATH: the rendered templates cannot be executed here")
    try:
        binary = build(go)
    except GoBuildFailed as exc:
        pytest.fail(str(exc))
    resolver = GoResolver(binary)
    yield resolver
    resolver.close()


def _payload(spec: SensorSpec) -> list[dict[str, Any]]:
    """The admission trigger's payload parameters: what Argo Events puts on the admission topic."""
    return sensor(spec, "ctloop", kafka_url="kafka:9092", admission_topic="ctloop.admission")["spec"]["triggers"][0][
        "template"]["kafka"]["payload"]


def _go_workflow(go: GoResolver, spec: SensorSpec, data: Any) -> dict[str, str] | str:
    """The data-derived parameters Argo Events fills in, or the first one it cannot resolve (no Workflow)."""
    text = json.dumps(data, ensure_ascii=False)
    out = {}
    for param in _payload(spec):
        if "contextKey" in param["src"]:
            continue  # the CloudEvent's own attributes, not the event data: nothing to compare
        got = go.resolve(param["src"], text)
        name = param["dest"]
        if not got.ok:
            return f"{name}: {got.error}"
        out[name] = got.value
    return out


def _local_workflow(spec: SensorSpec, data: Any) -> dict[str, str] | str:
    try:
        local = admission_payload(spec, data, CONTEXT)
    except MappingError as exc:
        return str(exc)
    rendered = {p["dest"] for p in _payload(spec) if "contextKey" not in p["src"]}
    return {name: value for name, value in local.items() if name in rendered}


def _same_outcome(go: GoResolver, spec: SensorSpec, data: Any) -> None:
    """Both engines refuse the event at the filters, or both map it, to the same Workflow or to none."""
    data = json.loads(json.dumps(data, ensure_ascii=False))  # what LocalSensor parses off the bus
    shown = json.dumps(data, ensure_ascii=False)[:500]
    filters = sensor(spec, "ctloop", kafka_url="kafka:9092", admission_topic="ctloop.admission")["spec"][
        "dependencies"][0].get("filters", {})
    local_refusal = rejection(spec.dependency, data)
    remote_pass = go.passes(filters, json.dumps(data, ensure_ascii=False))
    assert remote_pass.ok == (local_refusal is None), f"{spec.name} filters: local {local_refusal!r}, " \
        f"Argo {remote_pass} on {shown}"
    if local_refusal is not None:
        return
    remote, local = _go_workflow(go, spec, data), _local_workflow(spec, data)
    if isinstance(remote, str) and isinstance(local, str):
        return  # both refuse to submit; the reasons are worded differently
    assert remote == local, f"{spec.name} on {shown}"


# -- generated events -------------------------------------------------------------------------------------------

MISSING = object()
_tricky_text = st.text(alphabet=st.sampled_from("aZz09_.-/ İ\u0131Kß\u017fé\u212a\u00e9😀\n\t\"\\<>&%{}"), max_size=12)
_valid_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z")
# Letters whose lowercase differs between Python's str.lower and Go's strings.ToLower, or is not ASCII.
_case_traps = st.builds(str.__add__, _valid_names, st.sampled_from(
    ["İ", "\u0131", "\u017f", "ß", "ǅ", "Σ", "\u212a", "İİ"]))
_names = st.one_of(_valid_names, _case_traps, _tricky_text,
                   st.text(min_size=1, max_size=12))
_numbers_as_text = st.one_of(st.integers().map(str), st.floats(allow_nan=False).map(repr),
                             st.sampled_from(["0", "-0", "1e3", "007", "1.0", "true", "null", ""]))
_scalar = st.one_of(_names, _numbers_as_text, st.text(min_size=100, max_size=600), st.integers(),
                    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
# Mostly plausible strings, so that most events pass the filters and reach the mapping.
_field = st.one_of(_names, _names, _names, _scalar, st.just(MISSING))
_own_code = st.sampled_from(sorted(OWN_CODE))
_model = st.one_of(_own_code, _valid_names, _case_traps, _tricky_text, _field)


def _obj(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not MISSING}


@st.composite
def _kafka(draw: st.DrawFn, kind: str, uri_field: str) -> dict[str, Any]:
    data = _obj(model=draw(_model), digest=draw(_field), **{uri_field: draw(_field)})
    if kind in ("drift.detected", "quality.degraded"):
        data |= {"dataset_drift": draw(st.sampled_from([True, True, "true", False])),
                 "rows": draw(st.sampled_from([10, 10, 0, "5"]))}
    body = _obj(id=draw(_field), type=f"ctloop.{kind}", data=data)
    return {"topic": f"ctloop.{kind}", "key": "", "partition": draw(st.integers(0, 3)), "timestamp": "1",
            "headers": {}, "body": body}


@st.composite
def _minio(draw: st.DrawFn) -> dict[str, Any]:
    path = st.builds(lambda m, f: f"incoming/{m}/{f}", st.one_of(_own_code, _valid_names), _names)
    key = draw(st.one_of(path, path, path, st.builds(lambda m, f: f"incoming/{m}/{f}", _names, _names), _field))
    obj = _obj(key=key, eTag=draw(_field))
    record = {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": _obj(name=draw(_field)), "object": obj}}
    return {"notification": [record]}


@st.composite
def _manual(draw: st.DrawFn) -> dict[str, Any]:
    return {"header": {}, "body": _obj(model=draw(_model), uri=draw(_field), digest=draw(_field))}


@st.composite
def _tick(draw: st.DrawFn) -> dict[str, Any]:
    tick = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
    # The metadata is written from a spec, whose name already follows the rule.
    data = calendar_event_data(tick, (("model", draw(st.one_of(_own_code, _valid_names))),
                                      ("uri", draw(st.text(min_size=1))), ("gpu", "false")))
    digest = draw(_field)
    return data if digest is MISSING else data | {"digest": digest}


EVENTS = {
    "ctloop-data-arrived": _kafka("data.arrived", "uri"),
    "ctloop-drift": _kafka("drift.detected", "data_uri"),
    "ctloop-quality": _kafka("quality.degraded", "data_uri"),
    "ctloop-minio": _minio(),
    "ctloop-manual": _manual(),
    "ctloop-schedule-churn-model-v2": _tick(),
}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_generated_events_meet_the_same_fate_on_both_engines(go, name):
    spec, before = SPECS[name], go.cases

    # 250 per sensor, 1,250 events in all; a fixed seed keeps CI reproducible.
    @settings(max_examples=250, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(EVENTS[name])
    def check(data):
        _same_outcome(go, spec, data)

    check()
    assert go.cases - before >= 250  # every event went through Go, at least its filters


def _arrival(model: str, digest: str | None) -> dict:
    data = {"model": model, "uri": f"s3://b/{model}/x.parquet"} | ({"digest": digest} if digest else {})
    return {"topic": "ctloop.data", "partition": 0, "body": {"id": "ev-1", "type": "ctloop.data.arrived",
                                                             "data": data}}


SAMPLES = {
    "ctloop-data-arrived": [_arrival("churn", "abc"), _arrival("Churn_Model.v2", None), _arrival("x--", "d")],
    "ctloop-drift": [{"topic": "ctloop.drift", "body": {"id": "dr-1", "type": "ctloop.drift.detected", "data": {
        "model": "churn", "dataset_drift": True, "rows": 10, "data_uri": "s3://b/live/"}}}],
    "ctloop-quality": [{"topic": "ctloop.quality", "body": {"id": "q-1", "type": "ctloop.quality.degraded", "data": {
        "model": "churn", "version": "3", "metric": "roc_auc", "rows": 500, "data_uri": "s3://b/live/"}}}],
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


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_typical_events_are_submitted_by_both_engines_alike(go, name):
    for data in SAMPLES[name]:
        remote, local = _go_workflow(go, SPECS[name], data), _local_workflow(SPECS[name], data)
        assert isinstance(local, dict), local
        assert remote == local


@pytest.mark.parametrize("model", ["churn", "Churn_Model.v2", "fraud"])
def test_a_models_own_trainer_code_is_in_its_key_on_both_engines(go, model):
    spec = SPECS["ctloop-data-arrived"]
    remote, local = _go_workflow(go, spec, _arrival(model, "abc")), _local_workflow(spec, _arrival(model, "abc"))
    assert remote == local
    assert remote["idempotency-key"] == idempotency_key(model, "abc", OWN_CODE.get(model, VERSION))
    shared = _go_workflow(go, SPECS_SHARED["ctloop-data-arrived"], _arrival(model, "abc"))
    assert (shared["idempotency-key"] == remote["idempotency-key"]) == (model not in OWN_CODE)

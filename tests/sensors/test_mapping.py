"""Parameter mapping as LocalSensor applies it, and its agreement with the other engine's naming."""

from __future__ import annotations

import pytest

from ctloop.sensors.catalog import ClusterEndpoints, data_arrived_sensor, minio_sensor
from ctloop.sensors.mapping import MappingError, compile_parameters, parameters
from ctloop.settings import Settings
from ctloop.workflows.argo_engine import ArgoEngine
from ctloop.workflows.arguments import run_key
from ctloop.workflows.engine import RunRequest, idempotency_key


@pytest.mark.parametrize("model", ["churn", "Churn_Model.v2", "--x--", "é", "a" * 80, "ab-" * 20])
def test_the_mapped_workflow_name_is_the_name_the_argo_engine_submits_under(model):
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints())
    data = {"body": {"id": "ev-1", "type": "ctloop.data.arrived", "data": {"model": model, "uri": "s3://b/k",
                                                                          "digest": "abc"}}}
    params = parameters(spec, data, {"id": "ctx"})
    request = RunRequest(model=model, data_uri="s3://b/k", idempotency_key=params["idempotency-key"])
    workflow = ArgoEngine(Settings()).workflow(request, run_key(request))
    assert workflow.metadata.name == params["workflow-name"]
    assert len(params["workflow-name"]) <= 63


def test_a_data_arrival_maps_onto_the_workflow_parameters():
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints())
    data = {"body": {"id": "ev-1", "type": "ctloop.data.arrived", "data": {"model": "churn", "uri": "s3://b/k",
                                                                          "digest": "abc"}}}
    params = parameters(spec, data, {"id": "ctx"})
    key = idempotency_key("churn", "abc", "v1")
    assert params == {"model": "churn", "data-uri": "s3://b/k", "event-id": "ev-1", "trigger": "data",
                      "idempotency-key": key, "workflow-name": f"retrain-churn-{key[:20]}"}


def test_without_a_digest_the_key_falls_back_to_the_event_id():
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints())
    data = {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k"}}}
    assert parameters(spec, data, {})["idempotency-key"] == idempotency_key("churn", "ev-1", "v1")


def test_a_minio_notification_maps_model_uri_and_etag():
    spec = minio_sensor("v1", ClusterEndpoints())
    data = {"notification": [{"eventName": "s3:ObjectCreated:Put", "s3": {
        "bucket": {"name": "ctloop-data"}, "object": {"key": "incoming/churn/part-1.parquet", "eTag": "e1"}}}]}
    params = parameters(spec, data, {})
    assert params["model"] == "churn"
    assert params["data-uri"] == "s3://ctloop-data/incoming/churn/part-1.parquet"
    assert params["event-id"] == "ctloop-data/incoming/churn/part-1.parquet@e1"
    assert params["idempotency-key"] == idempotency_key("churn", "e1", "v1")


def test_a_missing_field_is_named():
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints())
    with pytest.raises(MappingError, match=r"parameter model: no value at body\.data\.model"):
        parameters(spec, {"body": {"id": "x", "data": {}}}, {})


def _outcome(plan, data):
    try:
        return plan(data, {"id": "ctx"})
    except MappingError as exc:
        return f"MappingError: {exc}"


ODD_EVENTS = [
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k", "digest": "abc"}}},
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k"}}},  # no digest: the id instead
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k", "digest": None}}},
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k", "digest": 0}}},
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k", "digest": 12.5}}},
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": "s3://b/k", "digest": [1, "a"]}}},
    {"body": {"id": 7, "data": {"model": "churn", "uri": 1e3}}},
    {"body": {"id": "ev-1", "data": {"model": 42, "uri": "s3://b/k", "digest": "abc"}}},  # not a string
    {"body": {"id": "ev-1", "data": {"model": "", "uri": "s3://b/k"}}},
    {"body": {"id": "ev-1", "data": {"model": "churn", "uri": ""}}},
    {"body": {"data": {"model": "churn", "uri": "s3://b/k"}}},
    {"body": {"id": "ev-1", "data": {"uri": "s3://b/k"}}},
    {"body": {"id": "ev-1", "data": ["churn"]}},
    {"body": "text"},
    {},
]


@pytest.mark.parametrize("data", ODD_EVENTS)
@pytest.mark.parametrize("sensor", ["data-arrived", "minio"])
def test_the_compiled_mapping_gives_the_same_values_and_errors_as_the_resolver(sensor, data):
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints()) if sensor == "data-arrived" \
        else minio_sensor("v1", ClusterEndpoints())
    assert _outcome(compile_parameters(spec), data) == _outcome(lambda d, c: parameters(spec, d, c), data)


@pytest.mark.parametrize("data", ODD_EVENTS)
def test_a_plan_making_some_parameters_fails_alike_and_gives_those(data):
    spec = data_arrived_sensor(Settings(), "v1", ClusterEndpoints())
    made = {"model", "idempotency-key"}
    everything = _outcome(compile_parameters(spec), data)
    some = _outcome(compile_parameters(spec, made=made), data)
    assert some == (everything if isinstance(everything, str) else {k: everything[k] for k in made})

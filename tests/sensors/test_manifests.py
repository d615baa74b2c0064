"""Rendered Argo Events objects: valid against the 1.9 schema, and consistent beyond what it checks."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from ctloop.modelspec import ModelSpec
from ctloop.sensors.catalog import schedule_sensors
from ctloop.sensors.checks import sensor_problems
from ctloop.sensors.render import gateway_deployment, manifest_objects, render_manifests, stale_files
from ctloop.sensors.spec import SpecError
from ctloop.settings import Settings

SCHEMA = Path(os.environ.get("CTLOOP_SCHEMAS_DIR") or Path(__file__).resolve().parents[2] / ".." / "shared" / "schemas"
               ) / "argo-events-schema.json"
PREFIX = "io.argoproj.events.v1alpha1."


def _strict(node: object) -> None:
    """Close objects that list properties, so a misspelt field is an error rather than ignored."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


@pytest.fixture(scope="module")
def validators():
    if not SCHEMA.is_file():
        pytest.skip(f"Argo Events schema not present at {SCHEMA}")
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text())
    definitions = copy.deepcopy(schema["definitions"])
    _strict(definitions)
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"anyOf": [{"type": "string"},
                                                                                {"type": "integer"}]}
    return {kind: Draft202012Validator({"$ref": f"#/definitions/{PREFIX}{kind}", "definitions": definitions})
            for kind in ("EventBus", "EventSource", "Sensor")}


@pytest.fixture(scope="module")
def objects():
    return manifest_objects(Settings(home=Path("/nonexistent")))


def test_every_rendered_object_validates_against_the_argo_events_schema(validators, objects):
    kinds = {obj["kind"] for obj in objects.values()}
    assert kinds == {"EventBus", "EventSource", "Sensor"}
    for name, obj in objects.items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validators[obj["kind"]].iter_errors(obj)]
        assert errors == [], name


def test_a_misspelt_field_is_caught_by_the_strict_schema(validators, objects):
    sensor = copy.deepcopy(objects["sensor-data-arrived.yaml"])
    sensor["spec"]["triggers"][0]["atleastOnce"] = True
    assert not validators["Sensor"].is_valid(sensor)


def test_sensors_are_consistent_with_their_event_sources_and_workflow(objects):
    sources = [o for o in objects.values() if o["kind"] == "EventSource"]
    sensors = [o for o in objects.values() if o["kind"] == "Sensor"]
    assert len(sensors) == 6, "five event sensors and the shipped churn spec's schedule"
    for sensor in sensors:
        assert sensor_problems(sensor, sources) == []


def test_sensors_match_the_rendered_retrain_workflow_template(objects):
    render = pytest.importorskip("ctloop.workflows.render", reason="ctloop.workflows.render not landed yet")
    files = render.render_manifests(Settings(home=Path("/nonexistent")))
    templates = {}
    for text in files.values():
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "WorkflowTemplate":
                templates[doc["metadata"]["name"]] = [p["name"] for p in doc["spec"]["arguments"]["parameters"]]
    sources = [o for o in objects.values() if o["kind"] == "EventSource"]
    for sensor in (o for o in objects.values() if o["kind"] == "Sensor"):
        assert sensor_problems(sensor, sources, templates) == []


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda s: s["spec"]["triggers"][0]["template"]["kafka"]["payload"][0]["src"].update(
        dependencyName="nope"), "unknown dependency 'nope'"),
    (lambda s: s["spec"]["triggers"][0]["template"]["kafka"]["payload"][0].update(dest="modell"),
     "the admission payload lacks model"),
    (lambda s: s["spec"]["triggers"][0]["template"]["kafka"].update(parameters=[]), "not keyed by model"),
    (lambda s: s["spec"]["dependencies"][0]["filters"]["data"][0].update(comparator="=="), "invalid comparator"),
    (lambda s: s["spec"]["dependencies"][0].update(eventName="other"), "which no EventSource offers"),
])
def test_semantic_check_names_each_broken_rule(objects, mutate, problem):
    sensor = copy.deepcopy(objects["sensor-drift.yaml"])
    mutate(sensor)
    sources = [o for o in objects.values() if o["kind"] == "EventSource"]
    problems = sensor_problems(sensor, sources)
    assert len(problems) == 1
    assert problem in problems[0]


def test_sensor_puts_the_candidate_run_on_the_admission_topic_keyed_by_model(objects):
    trigger = objects["sensor-data-arrived.yaml"]["spec"]["triggers"][0]
    kafka = trigger["template"]["kafka"]
    assert trigger["atLeastOnce"] is True
    assert trigger["retryStrategy"]["steps"] >= 1
    assert (kafka["topic"], kafka["requiredAcks"]) == ("ctloop.admission", -1)
    payload = {p["dest"]: p["src"] for p in kafka["payload"]}
    assert "sha256sum" in payload["idempotency-key"]["dataTemplate"]
    assert payload["model"] == {"dependencyName": "data-arrived", "dataKey": "body.data.model"}
    assert payload["trigger"]["dataTemplate"] == '{{ "data" }}'
    assert payload["gpu"]["dataTemplate"] == "{{ default false .Input.body.data.gpu }}"
    assert kafka["parameters"] == [{"src": payload["model"], "dest": "partitioningKey"}]


def test_the_gateway_runs_replicas_on_argo_with_its_state_in_a_database():
    gateway = gateway_deployment(Settings(home=Path("/nonexistent")))
    assert gateway["spec"]["replicas"] > 1
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["gateway", "run"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CTLOOP_ENGINE"]["value"] == "argo"
    assert env["CTLOOP_GATEWAY_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "ctloop-gateway-db"


def test_kafka_sources_resume_from_a_consumer_group(objects):
    kafka = objects["eventsource-kafka.yaml"]["spec"]["kafka"]
    assert {e["topic"] for e in kafka.values()} == {"ctloop.data", "ctloop.drift", "ctloop.quality"}
    assert all(e["consumerGroup"]["groupName"] and e["consumerGroup"]["oldest"] for e in kafka.values())


def test_minio_and_webhook_take_credentials_from_secrets(objects):
    minio = next(iter(objects["eventsource-minio.yaml"]["spec"]["minio"].values()))
    assert minio["accessKey"] == {"name": "ctloop-minio", "key": "accesskey"}
    assert minio["filter"] == {"prefix": "incoming/", "suffix": ".parquet"}
    webhook = next(iter(objects["eventsource-webhook.yaml"]["spec"]["webhook"].values()))
    assert webhook["authSecret"] == {"name": "ctloop-webhook", "key": "token"}


def test_rendering_is_deterministic():
    settings = Settings(home=Path("/nonexistent"))
    assert render_manifests(settings) == render_manifests(settings)


def test_checked_in_sensor_manifests_are_fresh(tmp_path):
    generated = Path(__file__).resolve().parents[2] / "k8s" / "base" / "generated"
    assert stale_files(render_manifests(Settings(home=tmp_path)), generated) == [], "run `ctloop render`"


def scheduled(name: str, image: str | None = None, **schedule: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": name, "data": {"features": [{"name": "x"}], "label": "y"},
                                     "retrain_uri": f"s3://ctloop-data/incoming/{name}/", "schedule": schedule,
                                     "image": image})


PINNED = "ghcr.io/team/fraud@sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def scheduled_objects():
    models = [scheduled("churn", cron="0 4 * * *", timezone="Europe/Berlin"),
              scheduled("Fraud_Model.v2", PINNED, interval="6h", gpu=True)]
    return manifest_objects(Settings(home=Path("/nonexistent")), models)


def _key_template(sensor: dict) -> str:
    payload = sensor["spec"]["triggers"][0]["template"]["kafka"]["payload"]
    return next(p["src"]["dataTemplate"] for p in payload if p["dest"] == "idempotency-key")


def test_a_model_with_its_own_image_is_keyed_by_that_image_too(objects, scheduled_objects):
    """Changed trainer code (a new image digest in the spec) is a new run for the same data; other models'
    keys are as without it. Both engines compute the keys alike (test_template_parity)."""
    pinned = _key_template(scheduled_objects["sensor-data-arrived.yaml"])
    assert f'(dict "Fraud_Model.v2" "{Settings().image}+trainer:sha256:{"ab" * 32}")' in pinned
    assert "churn" not in pinned.partition("(dict")[2].partition(")")[0]
    assert "(dict" not in _key_template(objects["sensor-data-arrived.yaml"])


def test_schedules_render_as_one_calendar_event_source_and_a_sensor_each(validators, scheduled_objects):
    calendar = scheduled_objects["eventsource-calendar.yaml"]
    assert calendar["spec"]["calendar"] == {
        "churn": {"schedule": "0 4 * * *", "timezone": "Europe/Berlin",
                  "metadata": {"model": "churn", "uri": "s3://ctloop-data/incoming/churn/", "gpu": "false"}},
        "fraud-model-v2": {"interval": "6h", "metadata": {"model": "Fraud_Model.v2",
                                                          "uri": "s3://ctloop-data/incoming/Fraud_Model.v2/",
                                                          "gpu": "true"}},
    }
    sources = [o for o in scheduled_objects.values() if o["kind"] == "EventSource"]
    for name in ("sensor-schedule-churn.yaml", "sensor-schedule-fraud-model-v2.yaml"):
        sensor = scheduled_objects[name]
        assert sensor_problems(sensor, sources) == []
        payload = {p["dest"]: p["src"] for p in sensor["spec"]["triggers"][0]["template"]["kafka"]["payload"]}
        assert payload["trigger"]["dataTemplate"] == '{{ "schedule" }}'
    for name, obj in scheduled_objects.items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validators[obj["kind"]].iter_errors(obj)]
        assert errors == [], name


def test_a_misspelt_calendar_field_is_caught_by_the_strict_schema(validators, scheduled_objects):
    calendar = copy.deepcopy(scheduled_objects["eventsource-calendar.yaml"])
    calendar["spec"]["calendar"]["churn"]["timeZone"] = calendar["spec"]["calendar"]["churn"].pop("timezone")
    assert not validators["EventSource"].is_valid(calendar)


def test_two_models_whose_names_render_alike_are_an_error():
    with pytest.raises(SpecError, match="models 'churn' and 'Churn' both render as sensor ctloop-schedule-churn"):
        schedule_sensors([scheduled("churn", interval="1h"), scheduled("Churn", interval="1h")], "v1")


def test_models_without_a_schedule_render_no_calendar(objects):
    plain = ModelSpec.model_validate({"name": "plain", "data": {"features": [{"name": "x"}], "label": "y"}})
    files = manifest_objects(Settings(home=Path("/nonexistent")), [plain])
    assert "eventsource-calendar.yaml" not in files
    assert set(objects) - set(files) == {"eventsource-calendar.yaml", "sensor-schedule-churn.yaml"}

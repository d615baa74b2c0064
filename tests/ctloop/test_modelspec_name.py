"""Model names: only characters that Python and Go lowercase alike, so both engines name the Workflow alike."""

from __future__ import annotations

import json

import pytest

from ctloop.modelspec import MODEL_NAME_RULE, ModelSpec, SpecInvalid, check_model_name, read_spec
from ctloop.sensors.catalog import ClusterEndpoints, data_arrived_sensor, manual_sensor
from ctloop.sensors.filters import rejection
from ctloop.settings import Settings

SCHEMA = {"features": [{"name": "x"}], "label": "y"}


@pytest.mark.parametrize("name", ["churn", "Churn_Model.v2", "0-a", "a" * 200])
def test_ascii_letters_digits_underscore_dot_and_dash_are_allowed(name):
    assert ModelSpec.model_validate({"name": name, "data": SCHEMA}).name == name


@pytest.mark.parametrize(("name", "culprit"), [
    ("churnİ", "U+0130"),           # Python lowercases it to "i̇", Go to "i"
    ("İstanbul", "must start with an ASCII letter or digit"),
    ("churn\u212a", "U+212A"),      # the Kelvin sign
    ("churn\n", "U+000A"),          # a trailing newline that a `$` regex lets through in Python
    ("a b", "U+0020"),
    ("-churn", "must start with an ASCII letter or digit"),
    ("", "must start with an ASCII letter or digit"),
])
def test_other_names_are_refused_at_spec_load_naming_the_rule(tmp_path, name, culprit):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": name, "data": SCHEMA}))
    with pytest.raises(SpecInvalid) as err:
        read_spec(path)
    assert culprit in str(err.value) and MODEL_NAME_RULE in str(err.value)


def test_the_rule_is_a_function_too():
    assert check_model_name("churn") == "churn"
    with pytest.raises(ValueError, match="U\\+0130"):
        check_model_name("churnİ")


def test_events_naming_a_model_outside_the_rule_are_refused_by_the_sensors_with_the_rule():
    arrival = {"body": {"id": "e1", "type": "ctloop.data.arrived", "data": {"model": "İstanbul", "uri": "s3://b/k"}}}
    manual = {"body": {"model": "churn\n", "uri": "s3://b/k"}}
    for spec, event in ((data_arrived_sensor(Settings(), "v", ClusterEndpoints()), arrival),
                        (manual_sensor("v", ClusterEndpoints()), manual)):
        reason = rejection(spec.dependency, event)
        assert reason is not None and MODEL_NAME_RULE in reason
    arrival["body"]["data"]["model"] = "Istanbul"
    assert rejection(data_arrived_sensor(Settings(), "v", ClusterEndpoints()).dependency, arrival) is None

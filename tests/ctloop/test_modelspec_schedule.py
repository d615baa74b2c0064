"""A model spec's schedule: validated when the spec is loaded, with errors that name the problem."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ctloop.modelspec import ModelSpec, Schedule, SpecInvalid, load_specs, read_spec

BASE = {"name": "churn", "data": {"features": [{"name": "x"}], "label": "y"}}


def spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate(BASE | fields)


def test_a_nightly_schedule_in_a_spec():
    s = spec(retrain_uri="s3://ctloop-data/incoming/churn/",
             schedule={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert s.schedule == Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert s.schedule_uri == "s3://ctloop-data/incoming/churn/", "defaults to the spec's retrain_uri"
    assert s.schedule.next_tick(datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2026, 6, 1, 0, 30, tzinfo=UTC)
    assert s.schedule.description == "cron '30 2 * * *' Europe/Berlin"


def test_the_schedule_may_name_its_own_prefix_and_use_an_interval():
    s = spec(retrain_uri="s3://b/live/", schedule={"interval": "6h", "data_uri": "s3://b/landing/"})
    assert s.schedule_uri == "s3://b/landing/"
    assert s.schedule.description == "every 6h"
    assert spec().schedule is None and spec().schedule_uri is None


@pytest.mark.parametrize(("schedule", "problem"), [
    ({"cron": "30 2 * * *", "timezone": "Europe/Berlinn"}, "unknown time zone 'Europe/Berlinn'"),
    ({"cron": "30 25 * * *"}, "hour field: 25 in '25' is above the maximum 23"),
    ({"cron": "@daily"}, "descriptors such as @daily are not accepted"),
    ({}, "set exactly one of cron"),
    ({"cron": "0 2 * * *", "interval": "1h"}, "set exactly one of cron"),
    ({"interval": "1d"}, "interval '1d' is not a duration"),
    ({"interval": "6h", "timezone": "Europe/Berlin"}, "has no effect on an interval"),
    ({"cron": "0 2 * * *", "extra": 1}, "extra"),
])
def test_a_bad_schedule_is_refused_naming_the_problem(schedule, problem):
    with pytest.raises(ValidationError) as caught:
        spec(retrain_uri="s3://b/p/", schedule=schedule)
    assert problem in str(caught.value)


def test_a_schedule_needs_data_to_retrain_on():
    with pytest.raises(ValidationError) as caught:
        spec(schedule={"cron": "0 2 * * *"})
    assert "schedule has no data to retrain on: set schedule.data_uri or retrain_uri" in str(caught.value)


def test_loading_specs_names_the_file_and_the_field(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(BASE | {"retrain_uri": "s3://b/p/",
                                                           "schedule": {"cron": "0 2 * * *"}}))
    assert [s.name for s in load_specs(tmp_path)] == ["churn"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BASE | {"name": "fraud", "retrain_uri": "s3://b/p/",
                                      "schedule": {"cron": "0 2 * * *", "timezone": "Nowhere"}}))
    with pytest.raises(SpecInvalid) as caught:
        read_spec(bad)
    assert str(bad) in str(caught.value) and "schedule.timezone" in str(caught.value)
    assert "unknown time zone 'Nowhere'" in str(caught.value)
    assert load_specs(tmp_path / "absent") == ()

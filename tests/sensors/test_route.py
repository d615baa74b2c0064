"""A catalog spec's body-only route (`Route.decide`) decides every event exactly as the general route: the
same candidate, the same filter's reason, the same `Unroutable` message."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.consume import Unroutable
from ctloop.sensors.admission import TRIGGERS, Candidate
from ctloop.sensors.catalog import cluster_sensors
from ctloop.sensors.eventdata import MISSING, find
from ctloop.sensors.filters import failed
from ctloop.sensors.local.route import GENERAL, Route
from ctloop.sensors.spec import Const, DataFilter, Dependency, SensorSpec
from ctloop.settings import Settings

KAFKA_SPECS = [spec for spec in cluster_sensors(Settings(), "v1") if spec.name in
               ("ctloop-data-arrived", "ctloop-drift", "ctloop-quality")]
ABSENT = object()
TYPES = ("ctloop.data.arrived", "ctloop.drift.detected", "ctloop.quality.degraded", "ctloop.model.promoted")
TEXTS = st.sampled_from(["churn", "m-1", "Bad Name", "", "a\nb", "s3://d/x", "abc"])
VALUES = st.one_of(TEXTS, st.sampled_from([None, 0, 1, 2.5, 1e21, True, False, [1, "a"], {"k": 1}]), st.just(ABSENT))
USUAL = st.sampled_from(["churn", "m-1", "s3://d/x"])
MOSTLY = st.one_of(USUAL, USUAL, USUAL, USUAL, VALUES)  # usually passes the filters, so that mapping is reached
FIELDS = ("model", "uri", "data_uri", "digest", "dataset_drift", "rows")
USUAL_DATA = st.builds(lambda *v: _object(dict(zip(FIELDS, v, strict=True))),
                       MOSTLY, MOSTLY, MOSTLY, VALUES, st.sampled_from([True] * 6 + [False, "true", "no", ABSENT]),
                       st.sampled_from([5] * 6 + [0, "3", -1, None, ABSENT]))
ANY_DATA = st.builds(lambda *v: _object(dict(zip(FIELDS, v, strict=True))), *[VALUES] * len(FIELDS))
DATA = st.one_of(USUAL_DATA, USUAL_DATA, USUAL_DATA, ANY_DATA, VALUES)


def _object(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not ABSENT}


def bodies(spec: SensorSpec) -> st.SearchStrategy[Any]:
    """Event bodies for `spec`: mostly of its type, with an id, sometimes anything at all."""
    own = st.just(next(t for t in TYPES if t.split(".")[1] in spec.name))
    return st.builds(lambda type_, id_, data: _object({"type": type_, "id": id_, "data": data}),
                     st.one_of(own, own, own, VALUES), st.one_of(st.just("ev-1"), st.just("ev-2"), VALUES), DATA)


def _general(route: Route, body: Any, event_time: float, gpu: bool) -> Candidate | str:
    """What `LocalSensor._candidate` makes of the event through the general route (no digest resolver)."""
    data = {"topic": "t", "key": "", "partition": 0, "timestamp": "", "headers": {}, "body": body}
    context = {"id": "ctx", "type": "t", "source": "s", "subject": ""}
    why = route.rejection(data)
    if why:
        return why
    found = find(data, route.digest_path)
    digest = str(found) if found is not MISSING and found else ""
    try:
        params = route.parameters(data, context)
    except Unroutable as exc:
        return f"unroutable: {exc}"
    return Candidate(event_id=params["event-id"], model=params["model"], key=params["idempotency-key"],
                     uri=params["data-uri"], digest=digest, trigger=params["trigger"], gpu=gpu, event_time=event_time)


def _decided(route: Route, body: Any, event_time: float, gpu: bool) -> Candidate | str:
    try:
        routed = route.decide(body, event_time, gpu, False)
    except Unroutable as exc:
        return f"unroutable: {exc}"
    if isinstance(routed, Candidate):
        return routed
    return failed(routed, {"topic": "t", "key": "", "partition": 0, "timestamp": "", "headers": {}, "body": body})


def test_the_catalogs_kafka_sensors_have_a_body_route_and_the_others_do_not():
    assert {spec.name: Route.of(spec).decide is not None for spec in cluster_sensors(Settings(), "v1")} == {
        "ctloop-data-arrived": True, "ctloop-drift": True, "ctloop-quality": True,
        "ctloop-minio": False, "ctloop-manual": False}


@pytest.mark.parametrize("spec", KAFKA_SPECS, ids=lambda s: s.name)
def test_the_body_route_decides_as_the_general_route(spec: SensorSpec):
    route = Route.of(spec)

    @settings(max_examples=600, deadline=None)
    @given(body=bodies(spec), gpu=st.booleans())
    def same(body: Any, gpu: bool) -> None:
        assert _decided(route, body, 12.5, gpu) == _general(route, body, 12.5, gpu)

    same()


GRID = {"id": ("ev-1", "", None, 7, ABSENT), "model": ("churn", "Bad Name", "", 7, None, ABSENT),
        "uri": ("s3://d/1", "", ["a"], ABSENT), "data_uri": ("s3://d/1", "", ABSENT),
        "digest": ("d1", "", None, 0, False, 2.5, ABSENT), "dataset_drift": (True, "true", False, ABSENT),
        "rows": (5, 0, ABSENT)}


@pytest.mark.parametrize("spec", KAFKA_SPECS, ids=lambda s: s.name)
def test_the_body_route_decides_every_combination_of_fields_as_the_general_route(spec: SensorSpec):
    route, own = Route.of(spec), next(t for t in TYPES if t.split(".")[1] in spec.name)
    outcomes = set()
    for type_ in (own, "ctloop.model.promoted"):
        for values in itertools.product(*GRID.values()):
            fields = dict(zip(GRID, values, strict=True))
            body = _object({"type": type_, "id": fields.pop("id"), "data": _object(fields)})
            decided = _decided(route, body, 12.5, False)
            assert decided == _general(route, body, 12.5, False), body
            outcomes.add("candidate" if isinstance(decided, Candidate) else
                         "unroutable" if decided.startswith("unroutable:") else "refused")
    assert outcomes == {"candidate", "unroutable", "refused"}


@pytest.mark.parametrize("spec", KAFKA_SPECS, ids=lambda s: s.name)
def test_an_event_that_passes_is_a_candidate_with_its_key(spec: SensorSpec):
    uri_field = "uri" if spec.name == "ctloop-data-arrived" else "data_uri"
    body = {"type": next(t for t in TYPES if t.split(".")[1] in spec.name), "id": "ev-1",
            "data": {"model": "churn", uri_field: "s3://d/1", "digest": "d1", "dataset_drift": True, "rows": 3}}
    candidate = Route.of(spec).decide(body, 1.0, True, False)
    assert isinstance(candidate, Candidate)
    assert (candidate.event_id, candidate.model, candidate.uri, candidate.digest, candidate.gpu) == (
        "ev-1", "churn", "s3://d/1", "d1", True)
    assert candidate == _general(Route.of(spec), body, 1.0, True)


def test_an_event_without_a_digest_goes_to_the_general_route_when_the_sensor_snapshots():
    route = Route.of(KAFKA_SPECS[0])
    body = {"type": "ctloop.data.arrived", "id": "ev-1", "data": {"model": "churn", "uri": "s3://d/1"}}
    assert route.decide(body, 1.0, False, True) is GENERAL
    assert route.decide(body, 1.0, False, False).digest == ""


def test_a_spec_of_another_shape_has_no_body_route():
    spec = KAFKA_SPECS[0]
    odd_trigger = SensorSpec(spec.name, spec.dependency, {**spec.params, "trigger": Const("nightly")})
    assert "nightly" not in TRIGGERS
    assert Route.of(odd_trigger).decide is None


def test_a_path_three_keys_deep_is_found_as_the_general_route_finds_it():
    spec = KAFKA_SPECS[0]
    tiered = SensorSpec(spec.name, Dependency(spec.dependency.name, spec.dependency.source, data=(
        *spec.dependency.data, DataFilter("body.data.meta.tier", "string", ("^gold$",)))), spec.params)
    route = Route.of(tiered)
    assert route.decide is not None
    data = {"model": "churn", "uri": "s3://d/1", "digest": "d1"}
    for meta in ({"tier": "gold"}, {"tier": "tin"}, {}, ["gold"], "gold", ABSENT):
        body = {"type": "ctloop.data.arrived", "id": "ev-1", "data": _object({**data, "meta": meta})}
        assert _decided(route, body, 1.0, False) == _general(route, body, 1.0, False), meta
    gold = {"type": "ctloop.data.arrived", "id": "ev-1", "data": {**data, "meta": {"tier": "gold"}}}
    assert isinstance(route.decide(gold, 1.0, False, False), Candidate)

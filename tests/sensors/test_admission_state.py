"""The admission state as `DecisionLog` saves it: the JSON the pydantic records wrote still loads, and a
state that is not one is refused with a message naming the field."""

from __future__ import annotations

import pydantic
import pytest

from ctloop.sensors.admission import AdmissionState, Candidate, Slot, Window

# Written by the sensor before `Candidate`, `Slot` and `Window` were msgspec structs (pydantic models then).
PYDANTIC_STATE = (
    '{"windows":{"a":{"candidate":{"event_id":"e1","model":"a","key":"k1","uri":"s3://d/1","digest":"d1",'
    '"trigger":"data","gpu":false,"event_time":1.5},"due_at":3.0}},'
    '"queued":{"b":{"event_id":"e2","model":"b","key":"k2","uri":"s3://d/2","digest":"","trigger":"drift",'
    '"gpu":true,"event_time":2.0}},'
    '"running":{"b":{"candidate":{"event_id":"e0","model":"b","key":"k0","uri":"s3://d/0","digest":"d0",'
    '"trigger":"data","gpu":false,"event_time":0.5},"run_id":"run-0","started_at":1.0}},'
    '"last_drift_at":{"b":1.0}}'
)


def _candidate(n: int, model: str, trigger: str = "data", gpu: bool = False, digest: str | None = None,
               event_time: float = 0.0) -> Candidate:
    return Candidate(event_id=f"e{n}", model=model, key=f"k{n}", uri=f"s3://d/{n}",
                     digest=f"d{n}" if digest is None else digest, trigger=trigger, gpu=gpu, event_time=event_time)


def test_a_state_saved_as_pydantic_models_loads_and_saves_as_the_same_json():
    state = AdmissionState.model_validate_json(PYDANTIC_STATE)
    assert state == AdmissionState(
        windows={"a": Window(candidate=_candidate(1, "a", event_time=1.5), due_at=3.0)},
        queued={"b": _candidate(2, "b", "drift", gpu=True, digest="", event_time=2.0)},
        running={"b": Slot(candidate=_candidate(0, "b", event_time=0.5), run_id="run-0", started_at=1.0)},
        last_drift_at={"b": 1.0})
    assert state.model_dump_json() == PYDANTIC_STATE


def test_a_state_with_an_unknown_trigger_is_refused_naming_it():
    with pytest.raises(pydantic.ValidationError, match=r"queued\.b[\s\S]*not a Candidate.*trigger"):
        AdmissionState.model_validate_json(PYDANTIC_STATE.replace('"drift"', '"nightly"'))


def test_a_candidate_ignores_keywords_that_name_no_field_as_the_pydantic_model_did():
    made = Candidate(event_id="e", model="m", key="k", uri="u", digest="d", trigger="data", params={},
                     event_time=1.0)
    assert made == Candidate(event_id="e", model="m", key="k", uri="u", digest="d", trigger="data", event_time=1.0)
    with pytest.raises(TypeError, match="event_time"):
        Candidate(event_id="e", model="m", key="k", uri="u", digest="d", trigger="data")

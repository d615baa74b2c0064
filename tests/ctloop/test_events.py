import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop.events import (
    ColumnDrift,
    DataArrived,
    DriftDetected,
    EventError,
    ModelPromoted,
    ModelRolledBack,
    RunFinished,
    new_event,
    parse,
    to_bytes,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

PAYLOADS = [
    DataArrived(model="churn", uri="s3://bucket/data/2026-01-02/", digest="abc", size=10),
    DriftDetected(
        model="churn", version="3", window_start=NOW, window_end=NOW, rows=100, bad_rows={"nan": 2},
        drifted_share=0.5, dataset_drift=True,
        columns={"x": ColumnDrift(stattest="ks", score=0.01, threshold=0.05, drifted=True)},
        report_uri="file:///tmp/r.html",
    ),
    ModelPromoted(model="churn", version="2", previous_version="1", actor="alice", reason="better", manual=True),
    ModelRolledBack(model="churn", from_version="2", to_version="1", actor="bob", reason="bad"),
    RunFinished(run_id="r1", model="churn", status="Succeeded", idempotency_key="k", trigger_event_id="e1"),
]


def structured(**overrides):
    doc = {"specversion": "1.0", "id": "e1", "type": "ctloop.data.arrived", "source": "urn:test",
           "data": {"model": "m", "uri": "file:///d"}}
    doc.update(overrides)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.event_type)
def test_every_event_type_round_trips_with_its_id(payload):
    event = new_event(payload, id="fixed-id", time=NOW)
    parsed = parse(to_bytes(event))
    assert parsed == event
    assert parsed.id == "fixed-id"
    assert type(parsed.data) is type(payload)


def test_wire_format_is_structured_cloudevents_json():
    doc = json.loads(to_bytes(new_event(PAYLOADS[0], id="x")))
    assert doc["specversion"] == "1.0"
    assert doc["type"] == "ctloop.data.arrived"
    assert doc["datacontenttype"] == "application/json"
    assert doc["data"]["uri"] == "s3://bucket/data/2026-01-02/"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", "not JSON"),
        (b"{nope", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (structured(id=None), "missing field: id"),
        (structured(source=5), "wrong type: source"),
        (structured(type="ctloop.unknown"), "unknown type"),
        (structured(specversion="0.3"), "unsupported specversion"),
        (structured(data={"uri": "file:///d"}), "missing field model"),
        (structured(data={"model": "m", "uri": "file:///d", "size": "big"}), "size"),
        (structured(data={"model": "m", "uri": "file:///d", "extra": 1}), "extra"),
        (b" " * 2_000_000, "oversized"),
    ],
)
def test_bad_messages_raise_event_error_naming_the_problem(raw, reason):
    with pytest.raises(EventError) as info:
        parse(raw)
    assert reason in info.value.reason


def test_size_limit_is_configurable():
    raw = to_bytes(new_event(PAYLOADS[0]))
    with pytest.raises(EventError, match="oversized"):
        parse(raw, max_bytes=len(raw) - 1)
    assert parse(raw, max_bytes=len(raw)).data == PAYLOADS[0]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_event_error(raw):
    with contextlib.suppress(EventError):
        parse(raw)


def json_containers(children: st.SearchStrategy) -> st.SearchStrategy:
    """JSON arrays and objects of `children`: how `st.recursive` grows a JSON value (a named function, whose source
    hypothesis reads to see that it uses its argument)."""
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    json_containers,
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "specversion": st.sampled_from(["1.0", "0.3"]) | json_values,
            "id": st.text(max_size=10) | json_values,
            "source": st.text(max_size=10) | json_values,
            "type": st.sampled_from(sorted({p.event_type for p in PAYLOADS})) | json_values,
            "time": st.text(max_size=30) | json_values,
            "subject": json_values,
            "data": json_values | st.fixed_dictionaries({"model": json_values, "uri": json_values}),
        },
    )
)
def test_arbitrary_json_documents_raise_only_event_error(doc):
    with contextlib.suppress(EventError):
        parse(json.dumps(doc).encode())

"""`parse_document` reads a plainly valid event of a hot type on a fast path; it must give what the general
path gives for every input: the same `Event` (fields set included), the same document, the same error reason."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop import events
from ctloop.events import (
    ColumnDrift,
    DataArrived,
    DriftDetected,
    EventError,
    LabelObserved,
    LabelsObserved,
    ModelPromoted,
    QualityDegraded,
    new_event,
    parse_document,
    to_bytes,
)
from tests.reliability.bad_messages import bad_events

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def outcome(parse, raw):
    """What a parser makes of `raw`: the event, its fields set (its payload's too) and the document, or the
    reason it gives."""
    try:
        event, doc = parse(raw)
    except EventError as exc:
        return ("error", exc.reason)
    return ("event", event, event.model_fields_set, event.data.model_fields_set, list(event.data.__dict__),
            event.data.model_dump_json(), doc)


def parse_alone(raw):
    """`parse`, which reads no document for a label event (the fast path builds it from the structs alone)."""
    return events.parse(raw), None


def assert_same(raw, *, fast: bool):
    taken = events._parse_plain(raw) is not None
    assert taken is fast, f"fast path {'not ' if fast else ''}taken for {raw!r}"
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)
    assert outcome(parse_alone, raw)[:-1] == outcome(events._parse_general, raw)[:-1]


def arrival(**overrides):
    doc = {"specversion": "1.0", "id": "e1", "type": "ctloop.data.arrived", "source": "urn:test",
           "time": "2026-11-01T00:00:00Z", "data": {"model": "m", "uri": "s3://d/m/1"}}
    doc.update(overrides)
    return json.dumps(doc).encode()


def with_data(**data):
    return arrival(data={"model": "m", "uri": "s3://d/m/1", **data})


HOT = [
    DataArrived(model="churn", uri="s3://b/d/", digest="abc", size=10, gpu=True),
    DataArrived(model="ünïcødé ✓", uri="s3://b/\"quoted\"\n\t\\"),
    DriftDetected(model="churn", version="3", window_start=NOW, window_end=NOW + timedelta(minutes=5), rows=100,
                  bad_rows={"nan": 2}, drifted_share=0.5, dataset_drift=True,
                  columns={"x": ColumnDrift(stattest="ks", score=0.01, threshold=0.05, drifted=True),
                           "y": ColumnDrift(stattest="psi", score=1e-300, threshold=3.0, drifted=False)},
                  report_uri="file:///tmp/r.html", data_uri="s3://l/churn", rows_uri="s3://r/churn"),
    DriftDetected(model="m", window_start=NOW, window_end=NOW, rows=0, drifted_share=0.0, dataset_drift=False,
                  columns={}),
    QualityDegraded(model="churn", version="4", metric="auc", value=0.61, threshold=0.7, holdout=0.8,
                    rule="max_drop", rows=5000, window_start=NOW, window_end=NOW, data_uri="s3://l/churn"),
    LabelObserved(prediction_id="0f1e2d3c-7", label=1, observed_at=NOW),
    LabelsObserved(labels=[
        LabelObserved(prediction_id="p-1", label=True, observed_at=NOW),
        LabelObserved(model="churn", key="customer 42", label="churned", observed_at=NOW + timedelta(hours=1)),
        LabelObserved(prediction_id="p-3", model="churn", key="k", label=0.25, observed_at=NOW),
        LabelObserved(prediction_id="p-4", label=-(2**63), observed_at=NOW)]),
]


@pytest.mark.parametrize("payload", HOT, ids=lambda p: p.event_type)
@pytest.mark.parametrize("subject", [None, "a subject"])
def test_every_hot_type_takes_the_fast_path_with_the_same_result(payload, subject):
    raw = to_bytes(new_event(payload, id="e-1", time=NOW, subject=subject))
    assert_same(raw, fast=True)
    event, _ = parse_document(raw)
    assert event.data == payload


def test_other_types_take_the_general_path():
    assert_same(to_bytes(new_event(ModelPromoted(model="m", version="2", actor="a", reason="r"))), fast=False)


@pytest.mark.parametrize("raw", [
    arrival(time="2026-11-01T00:00:00.123456+02:00"),
    arrival(datacontenttype="application/json", dataschema="urn:s", subject="m"),
    with_data(digest=None, size=None),
    with_data(size=0),
    with_data(size=2**63 - 1),
    with_data(model="x" * 200, uri="u" * 4096),
    b'{"specversion":"1.0","type":"ctloop.data.arrived","id":"a","id":"b","source":"s","time":"2026-11-01T00:00:00Z",'
    b'"data":{"model":"m","uri":"u","uri":"v"}}',
    b'  {"data":{"uri":"u","model":"m"},"source":"s","id":"x","type":"ctloop.data.arrived","specversion":"1.0",'
    b'"time":"2026-11-01T00:00:00+00:00"} \n',
], ids=repr)
def test_plainly_valid_variants_take_the_fast_path(raw):
    assert_same(raw, fast=True)


@pytest.mark.parametrize("raw", [
    # Not JSON, or JSON that orjson and json read differently.
    b"{not json", b"[1]", b"\xef\xbb\xbf" + arrival(), arrival().decode().encode("utf-16"),
    with_data(size=float("nan")), with_data(size=2**64), with_data(size=2**70), with_data(size=-1),
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","source":"s","data":{"model":"\\ud800","uri":"u"}}',
    # What pydantic reads leniently: the general path decides.
    with_data(size="5"), with_data(size=5.0), with_data(gpu=1), with_data(gpu="true"), with_data(digest=5),
    # Attributes the CloudEvents SDK must judge, or that are wrong.
    arrival(subject=None), arrival(subject=""), arrival(time=None), arrival(time=12345), arrival(time="yesterday"),
    arrival(time="2026-11-01T00:00:00z"),
    arrival(time="2026-11-01T00:00:00"), arrival(specversion="0.3"), arrival(id=""), arrival(id=7),
    arrival(source=None), arrival(extension="x"), arrival(data_base64="eA=="), arrival(datacontenttype=""),
    arrival(type="ctloop.unknown"),
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","source":"s"}',
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","type":"ctloop.drift.detected","source":"s",'
    b'"data":{"model":"m","uri":"u"}}',
    # Payloads that fail validation.
    with_data(model=""), with_data(model="x" * 201), with_data(uri="u" * 4097), with_data(colour="red"),
    arrival(data={"model": "m"}), arrival(data=[1]), arrival(data=None),
], ids=repr)
def test_anything_else_gets_the_general_paths_result(raw):
    assert_same(raw, fast=False)


def drift(**data):
    payload = {"model": "m", "window_start": "2026-11-01T00:00:00Z", "window_end": "2026-11-01T00:05:00+01:00",
               "rows": 3, "drifted_share": 0.5, "dataset_drift": True, "columns": {}, **data}
    return arrival(type="ctloop.drift.detected", data=payload)


@pytest.mark.parametrize("raw", [
    drift(), drift(rows=0, drifted_share=1), drift(columns={"c": {"stattest": "ks", "score": 1, "threshold": 2,
                                                                   "drifted": False}}),
    drift(bad_rows={"a": -3}), drift(window_start="2026-11-01T00:00:00.1234567Z"),
], ids=repr)
def test_drift_variants_agree(raw):
    assert_same(raw, fast=True)


@pytest.mark.parametrize("raw", [
    drift(window_start="2026-11-01"), drift(window_start="soon"), drift(rows=-1), drift(drifted_share=2),
    drift(columns={"c": {"stattest": "ks", "score": 10**30, "threshold": 2, "drifted": False}}),
    drift(columns={"c": {"stattest": "ks", "score": "1", "threshold": 2, "drifted": False}}),
    drift(columns=[]), drift(extra=1),
], ids=repr)
def test_drift_variants_the_fast_path_leaves_to_the_general_one(raw):
    # The date-only window is valid (pydantic reads it); the rest are not. Either way, one answer.
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)


def label(**fields):
    return {"prediction_id": "p-1", "label": 1, "observed_at": "2026-11-01T00:00:00Z", **fields}


def one_label(**fields):
    return arrival(type="ctloop.label.observed", data=label(**fields))


def labels(*items):
    return arrival(type="ctloop.labels.observed", data={"labels": list(items)})


@pytest.mark.parametrize("raw", [
    one_label(), one_label(label=True), one_label(label=0.0), one_label(label=5.0), one_label(label=-1e300),
    one_label(label=""), one_label(label=2**63 - 1), one_label(prediction_id=None, model="m", key="k"),
    one_label(model="m", key=None), one_label(prediction_id="x" * 200, model="m" * 200, key="k" * 1000),
    one_label(observed_at="2026-11-01T00:00:00.1234567+05:30"), one_label(observed_at="2026-11-01T00:00:00+00:00"),
    labels(label()), labels(*[label(prediction_id=f"p-{n}", label=n % 3 == 0) for n in range(10_000)]),
    labels(label(), {"model": "m", "key": "k", "label": "yes", "observed_at": "2026-11-01T00:00:00Z"}),
    b'{"specversion":"1.0","type":"ctloop.label.observed","id":"a","source":"s","time":"2026-11-01T00:00:00Z",'
    b'"data":{"prediction_id":"p",'
    b'"label":1,"label":"two","observed_at":"2026-11-01T00:00:00Z"}}',
], ids=lambda raw: repr(raw[:160]))
def test_label_variants_take_the_fast_path(raw):
    assert_same(raw, fast=True)


@pytest.mark.parametrize("raw", [
    # The model validator's cases: no prediction named, a naive time, a label that is not finite.
    one_label(prediction_id=None), one_label(prediction_id=None, model="m"), one_label(prediction_id=None, key="k"),
    one_label(observed_at="2026-11-01T00:00:00"), one_label(observed_at="2026-11-01"), one_label(label=1e400),
    one_label(label=float("inf")), one_label(label=float("nan")),
    # What pydantic reads leniently or refuses, in its words.
    one_label(observed_at=1700000000), one_label(observed_at="soon"), one_label(label=None), one_label(label=[1]),
    one_label(label={"a": 1}), one_label(label=2**63), one_label(label=2**70), one_label(prediction_id=""),
    one_label(prediction_id="x" * 201), one_label(model="m" * 201, prediction_id=None, key="k"),
    one_label(key="k" * 1001), one_label(prediction_id=7), one_label(colour="red"), arrival(
        type="ctloop.label.observed", data={"prediction_id": "p", "observed_at": "2026-11-01T00:00:00Z"}),
    # A batch is taken or refused whole; one bad label sends it to the general path.
    labels(), labels(label(), label(prediction_id=None)), labels(label(), label(observed_at="2026-11-01T00:00:00")),
    labels(*[label()] * 10_001), labels(label(), 5), arrival(type="ctloop.labels.observed", data={"labels": []}),
    arrival(type="ctloop.labels.observed", data={"labels": [label()], "extra": 1}),
    arrival(type="ctloop.labels.observed", data=label()),
    # Bytes that are not plainly JSON, or a repeated "type" key: `parse` reads no document to compare them.
    one_label(prediction_id="\ud800"), b"\xef\xbb\xbf" + one_label(), one_label().replace(b'"p-1"', b'"p-\xff"'),
    one_label().replace(b'"label": 1', b'"label": NaN'), one_label() + b" x",
    one_label().replace(b'"type": "ctloop.label.observed"',
                        b'"type": "ctloop.label.observed", "type": "ctloop.labels.observed"'),
    one_label().replace(b'"type": "ctloop.label.observed"',
                        b'"type": "ctloop.data.arrived", "type": "ctloop.label.observed"'),
], ids=lambda raw: repr(raw[:160]))
def test_labels_the_fast_path_leaves_to_the_general_one(raw):
    assert_same(raw, fast=False)


def test_an_event_without_time_is_stamped_now_on_both_paths():
    raw = json.dumps({"specversion": "1.0", "id": "e", "type": "ctloop.data.arrived", "source": "s",
                      "data": {"model": "m", "uri": "u"}}).encode()
    before = datetime.now(UTC)
    event, _ = parse_document(raw)
    assert before <= event.time <= datetime.now(UTC)
    assert events._parse_plain(raw) is not None


TEXT = st.text(max_size=12)


def json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    """JSON arrays and objects of `inner` values: how `st.recursive` grows a JSON value. A named function, not a
    lambda inside the call: hypothesis reads the extend function's source to see that it uses its argument, and
    a lambda's source line within a multi-line call does not always parse (a HypothesisDeprecationWarning)."""
    return st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                       json_containers, max_leaves=8)


NAME = st.text(min_size=1, max_size=12)
COUNT = st.integers(0, 2**70)


def mostly(valid):
    """`valid` four times in five, any JSON value otherwise: most examples valid, each field wrong at times."""
    return st.integers(0, 4).flatmap(lambda k: valid if k else JSONISH)


@settings(max_examples=300, deadline=None)
@given(model=mostly(NAME), uri=mostly(NAME), digest=mostly(st.none() | TEXT), size=mostly(st.none() | COUNT),
       gpu=mostly(st.booleans()), time=mostly(st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-01T00:00:00+05:30"])))
def test_any_arrival_payload_gets_the_same_answer_on_both_paths(model, uri, digest, size, gpu, time):
    raw = arrival(time=time, data={"model": model, "uri": uri, "digest": digest, "size": size, "gpu": gpu})
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)


TIMES = mostly(st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-01T00:00:00.1234567+05:30", "2026-11-01",
                                "2026-11-01 01:02", "1700000000", "soon", ""]))
NUMBERS = mostly(st.integers(-(2**70), 2**70) | st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(rows=mostly(COUNT), share=mostly(st.floats(0, 1)), drift=mostly(st.booleans()), start=TIMES, end=TIMES,
       score=NUMBERS, bad=mostly(st.dictionaries(TEXT, st.integers(), max_size=2)), version=mostly(st.none() | TEXT))
def test_any_drift_payload_gets_the_same_answer_on_both_paths(rows, share, drift, start, end, score, bad, version):
    raw = arrival(type="ctloop.drift.detected", data={
        "model": "m", "version": version, "window_start": start, "window_end": end, "rows": rows,
        "drifted_share": share, "dataset_drift": drift, "bad_rows": bad,
        "columns": {"c": {"stattest": "ks", "score": score, "threshold": 0.5, "drifted": True}}})
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)


@settings(max_examples=200, deadline=None)
@given(value=NUMBERS, holdout=mostly(st.none() | st.floats()),
       rule=mostly(st.sampled_from(["min", "max", "max_drop", "x"])), start=TIMES, rows=mostly(COUNT))
def test_any_quality_payload_gets_the_same_answer_on_both_paths(value, holdout, rule, start, rows):
    raw = arrival(type="ctloop.quality.degraded", data={
        "model": "m", "version": "2", "metric": "auc", "value": value, "threshold": 0.7, "holdout": holdout,
        "rule": rule, "rows": rows, "window_start": start, "window_end": "2026-11-01T00:00:00Z"})
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)

IDS = mostly(st.text(min_size=1, max_size=8) | st.sampled_from([None, "", "p" * 200, "p" * 201]))
LABELS = mostly(st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | TEXT)
AWARE = ["2026-11-01T00:00:00Z", "2026-11-01T00:00:00.1234567+05:30"]
OBSERVED = mostly(st.sampled_from(AWARE * 3 + ["2026-11-01", "2026-11-01T01:02:03", "1700000000", "soon", ""]))


def any_label():
    return st.fixed_dictionaries({"prediction_id": IDS, "label": LABELS, "observed_at": OBSERVED},
                                 optional={"model": IDS, "key": IDS})


@settings(max_examples=300, deadline=None)
@given(item=any_label())
def test_any_label_payload_gets_the_same_answer_on_both_paths(item):
    raw = json.dumps({"specversion": "1.0", "id": "e", "type": "ctloop.label.observed", "source": "s",
                      "time": NOW.isoformat(), "data": item}).encode()
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)
    assert outcome(parse_alone, raw)[:-1] == outcome(events._parse_general, raw)[:-1]


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.one_of(any_label(), st.just(label())), max_size=6))
def test_any_labels_payload_gets_the_same_answer_on_both_paths(items):
    raw = json.dumps({"specversion": "1.0", "id": "e", "type": "ctloop.labels.observed", "source": "s",
                      "time": NOW.isoformat(), "data": {"labels": items}}).encode()
    assert outcome(parse_document, raw) == outcome(events._parse_general, raw)
    assert outcome(parse_alone, raw)[:-1] == outcome(events._parse_general, raw)[:-1]


def test_label_properties_reach_the_fast_path():
    """The property tests above are only worth something if many of their examples take the fast path."""
    taken = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(item=any_label())
    def probe(item):
        raw = json.dumps({"specversion": "1.0", "id": "e", "type": "ctloop.label.observed", "source": "s",
                          "time": NOW.isoformat(), "data": item}).encode()
        taken.append(events._parse_plain(raw) is not None)

    probe()
    assert 0.1 < sum(taken) / len(taken) < 0.9, sum(taken)


def test_an_arrivals_payload_json_is_pydantics_for_every_character_and_integer():
    """Content digests stored before are compared on redelivery: `payload_json` must keep pydantic's bytes."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    sizes = [None, 0, 1, 2**63 - 1, 2**64, 10**40]
    for n, start in enumerate(range(0, len(every), 4096)):
        text = every[start:start + 4096]
        payload = DataArrived(model=text[:200], uri=text, digest=text, size=sizes[n % len(sizes)], gpu=n % 2 == 0)
        assert events.payload_json(payload) == payload.model_dump_json().encode(), start
    for payload in HOT:
        assert events.payload_json(payload) == payload.model_dump_json().encode()


@settings(max_examples=300, deadline=None)
@given(raw=bad_events(4096))
def test_every_bad_message_gets_the_general_paths_reason(raw):
    """The reliability suite's bad messages (every field wrong, missing, undecodable, oversized)."""
    with pytest.raises(EventError) as fast:
        parse_document(raw, max_bytes=4096)
    if len(raw) <= 4096:  # the size check comes before either path
        with pytest.raises(EventError) as general:
            events._parse_general(raw)
        assert fast.value.reason == general.value.reason


def behaviour(event):
    """What a caller can do with an event: hash, print, pickle, copy and dump it."""
    try:
        hashed: object = hash(event)
    except TypeError as exc:  # a drift verdict's columns are a dict
        hashed = str(exc)
    return (hashed, repr(event), pickle.loads(pickle.dumps(event)), event.model_copy(update={"id": "x"}),
            copy.deepcopy(event), event.model_dump(), event.model_dump(exclude_unset=True), event.model_dump_json())


@pytest.mark.parametrize("payload", HOT, ids=lambda p: p.event_type)
def test_an_event_from_the_fast_path_behaves_as_a_validated_one(payload):
    raw = to_bytes(new_event(payload, id="e-1", time=NOW))
    fast, _ = events._parse_plain(raw)
    alone, _ = events._parse_plain(raw, document=False)
    general, _ = events._parse_general(raw)
    assert behaviour(fast) == behaviour(general)
    assert behaviour(alone) == behaviour(general)

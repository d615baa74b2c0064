"""`parse_brief` gives, for every input, what `parse_document` and `content_digest` give: the same fields, the same
content digest byte for byte, the same document, or the same error reason."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctloop import events
from ctloop.events import (
    Brief,
    DataArrived,
    EventError,
    ModelPromoted,
    ModelRolledBack,
    RunFinished,
    content_digest,
    new_event,
    parse_brief,
    parse_document,
    to_bytes,
)
from tests.ctloop.test_events_fast import (
    HOT,
    JSONISH,
    NAME,
    NOW,
    NUMBERS,
    TEXT,
    TIMES,
    any_label,
    arrival,
    drift,
    label,
    labels,
    mostly,
    one_label,
    with_data,
)
from tests.reliability.bad_messages import bad_events


def digest_as_first_defined(event: events.Event) -> str:
    """The content digest as it was first stored: sha256 of the type and `model_dump_json()` of the payload."""
    return hashlib.sha256(f"{event.type}\n{event.data.model_dump_json()}".encode()).hexdigest()[:32]


def expected(raw: bytes | str, max_bytes: int = events.DEFAULT_MAX_BYTES) -> tuple:
    """What the sensor made of `raw` before `parse_brief`: `parse_document`, then the event's fields."""
    try:
        event, doc = parse_document(raw, max_bytes=max_bytes)
    except EventError as exc:
        return ("error", exc.reason)
    assert content_digest(event) == digest_as_first_defined(event)
    return ("brief", event.id, event.type, event.source, event.subject, event.time.timestamp(), event.model,
            bool(getattr(event.data, "gpu", False)), digest_as_first_defined(event), json.dumps(doc))


def briefed(raw: bytes | str, max_bytes: int = events.DEFAULT_MAX_BYTES) -> tuple:
    try:
        brief = parse_brief(raw, max_bytes=max_bytes)
    except EventError as exc:
        return ("error", exc.reason)
    assert type(brief) is Brief
    # json.dumps tells 1 from 1.0 and True, and keeps the keys' order, where == on the dicts would not.
    return ("brief", brief.id, brief.type, brief.source, brief.subject, brief.time, brief.model, brief.gpu,
            brief.digest, json.dumps(brief.document))


def assert_same(raw: bytes | str, max_bytes: int = events.DEFAULT_MAX_BYTES) -> tuple:
    before = datetime.now(UTC).timestamp()
    got = briefed(raw, max_bytes)
    want = expected(raw, max_bytes)
    if got[0] == "brief" and "time" not in json.loads(got[-1]):  # stamped now, on each parse
        assert before <= got[5] <= want[5] <= datetime.now(UTC).timestamp()
        got, want = (*got[:5], "now", *got[6:]), (*want[:5], "now", *want[6:])
    assert got == want
    return got


@pytest.mark.parametrize("payload", HOT, ids=lambda p: p.event_type)
@pytest.mark.parametrize("subject", [None, "a subject"])
def test_every_hot_type_is_briefed_as_its_event(payload, subject):
    raw = to_bytes(new_event(payload, id="e-1", time=NOW, subject=subject))
    assert assert_same(raw)[0] == "brief"
    assert assert_same(raw.decode())[0] == "brief"  # a str is read as its UTF-8 bytes


@pytest.mark.parametrize("payload", [
    ModelPromoted(model="m", version="2", actor="a", reason="r"),
    RunFinished(run_id="r", model="m", status="Failed", error="boom"),
], ids=lambda p: p.event_type)
def test_other_types_are_briefed_as_their_event(payload):
    assert assert_same(to_bytes(new_event(payload, time=NOW)))[0] == "brief"


def test_an_arrivals_brief_reads_its_fields():
    raw = to_bytes(new_event(DataArrived(model="churn", uri="s3://b/1", digest="d", size=3, gpu=True), id="e-9",
                             source="urn:s3", subject="subj", time=NOW))
    brief = parse_brief(raw)
    assert (brief.id, brief.type, brief.source, brief.subject, brief.model, brief.gpu) == (
        "e-9", "ctloop.data.arrived", "urn:s3", "subj", "churn", True)
    assert brief.time == NOW.timestamp() == 1767323045.678901
    assert brief.document == json.loads(raw)
    assert len(brief.digest) == 32 and int(brief.digest, 16) >= 0


@pytest.mark.parametrize("time", [
    "2026-11-01T00:00:00Z", "2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00-00:00", "2026-11-01T23:59:59.5+14:00",
    "2026-11-01T00:00:00.123456-05:30", "2026-11-01T00:00:00.1234567Z", "2026-11-01T00:00:00.1Z",
    "2026-11-01T00:00:00,25Z", "2026-11-01T00:00Z", "2026-11-01T00Z", "2026-11-01 00:00:00Z", "20261101T000000Z",
    "2026-W44-1T00:00:00Z", "2026-11-01T00:00:00+05:30:15", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999Z", "2026-11-01T24:00:00Z",
    # Refused: no zone, not a time, out of range.
    "2026-11-01T00:00:00", "2026-11-01", "2026-11-01T00:00:00z", "yesterday", "", "2026-13-01T00:00:00Z",
], ids=repr)
def test_the_time_is_read_as_the_event_reads_it(time):
    assert_same(arrival(time=time))


def test_an_event_without_time_is_briefed_now():
    raw = json.dumps({"specversion": "1.0", "id": "e", "type": "ctloop.data.arrived", "source": "s",
                      "data": {"model": "m", "uri": "u"}}).encode()
    before = datetime.now(UTC).timestamp()
    brief = parse_brief(raw)
    assert before <= brief.time <= datetime.now(UTC).timestamp()
    event, _ = parse_document(raw)
    assert brief.digest == digest_as_first_defined(event) and "time" not in brief.document


@pytest.mark.parametrize("raw", [
    arrival(time="2026-11-01T00:00:00.123456+02:00"),
    arrival(datacontenttype="application/json", dataschema="urn:s", subject="m"),
    with_data(digest=None, size=None), with_data(size=0), with_data(size=2**63 - 1), with_data(gpu=True),
    with_data(model="x" * 200, uri="u" * 4096), with_data(model="\u00e9\u2713\U0001f600", uri="\x00\x1f\"\\/"),
    b'{"specversion":"1.0","type":"ctloop.data.arrived","id":"a","id":"b","source":"s","time":"2026-11-01T00:00:00Z",'
    b'"data":{"model":"m","uri":"u","uri":"v"}}',
    b'{"specversion":"1.0","type":"ctloop.data.arrived","id":"a","source":"s","data":{"uri":"\\u00e9\\ud83d\\ude00",'
    b'"model":"\\/"}}',
    # Not JSON, or JSON that orjson and json read differently.
    b"{not json", b"[1]", b"\xef\xbb\xbf" + arrival(), arrival().decode().encode("utf-16"), b"", b"null",
    with_data(size=float("nan")), with_data(size=2**64), with_data(size=2**70), with_data(size=-1),
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","source":"s","data":{"model":"\\ud800","uri":"u"}}',
    # What pydantic reads leniently.
    with_data(size="5"), with_data(size=5.0), with_data(gpu=1), with_data(gpu="true"), with_data(digest=5),
    # Attributes the CloudEvents SDK must judge, or that are wrong.
    arrival(subject=None), arrival(subject=""), arrival(time=None), arrival(time=12345), arrival(specversion="0.3"),
    arrival(id=""), arrival(id=7), arrival(source=None), arrival(extension="x"), arrival(data_base64="eA=="),
    arrival(datacontenttype=""), arrival(type="ctloop.unknown"),
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","source":"s"}',
    b'{"specversion":"1.0","id":"e","type":"ctloop.data.arrived","type":"ctloop.drift.detected","source":"s",'
    b'"data":{"model":"m","uri":"u"}}',
    b'{"specversion":"1.0","id":"e","type":"ctloop.drift.detected","type":"ctloop.data.arrived","source":"s",'
    b'"data":{"model":"m","uri":"u"}}',
    # Payloads that fail validation.
    with_data(model=""), with_data(model="x" * 201), with_data(uri="u" * 4097), with_data(colour="red"),
    arrival(data={"model": "m"}), arrival(data=[1]), arrival(data=None),
    # The other hot types, plain or doubtful.
    drift(), drift(window_start="2026-11-01T00:00:00.1234567Z", bad_rows={"a": -3}), drift(window_start="2026-11-01"),
    drift(rows=-1), drift(columns={"c": {"stattest": "ks", "score": 1, "threshold": 2, "drifted": False}}),
    one_label(), one_label(prediction_id=None), labels(label(), label(observed_at="2026-11-01T00:00:00")),
], ids=lambda raw: repr(raw[:160]))
def test_variants_get_the_same_answer(raw):
    assert_same(raw)


def test_the_size_limit_comes_first():
    raw = arrival()
    assert assert_same(raw, max_bytes=len(raw))[0] == "brief"
    assert assert_same(raw, max_bytes=len(raw) - 1) == (
        "error", f"oversized: {len(raw)} bytes exceeds the limit of {len(raw) - 1}")
    assert assert_same("é" * 10, max_bytes=19)[1].startswith("oversized: 20 bytes")


COUNT = st.integers(0, 2**70)
ANY_TEXT = st.text()  # every code point, surrogates included (they go to the general path)


@settings(max_examples=500, deadline=None)
@given(model=mostly(NAME), uri=mostly(ANY_TEXT), digest=mostly(st.none() | ANY_TEXT), size=mostly(st.none() | COUNT),
       gpu=mostly(st.booleans()), time=mostly(st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-01T00:00:00+05:30"])),
       ascii_only=st.booleans())
def test_any_arrival_gets_the_same_answer(model, uri, digest, size, gpu, time, ascii_only):
    doc = {"specversion": "1.0", "id": "e1", "type": "ctloop.data.arrived", "source": "urn:test", "time": time,
           "data": {"model": model, "uri": uri, "digest": digest, "size": size, "gpu": gpu}}
    try:
        raw = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")
    except UnicodeEncodeError:
        return
    assert_same(raw)


@settings(max_examples=500, deadline=None)
@given(model=st.text(min_size=1, max_size=200), uri=st.text(min_size=1, max_size=300), digest=st.none() | st.text(),
       size=st.none() | st.integers(0, 2**63 - 1), gpu=st.booleans(), subject=st.none() | st.text(min_size=1),
       when=st.datetimes(timezones=st.timezones()))
def test_any_valid_arrival_is_briefed_on_the_fast_path_with_pydantics_digest(model, uri, digest, size, gpu, subject,
                                                                            when):
    """The arrivals a producer writes: byte-identical digests for every character the payload may hold."""
    event = new_event(DataArrived(model=model, uri=uri, digest=digest, size=size, gpu=gpu), subject=subject,
                      time=when)
    try:
        raw = to_bytes(event)
    except (UnicodeEncodeError, ValueError):  # a surrogate cannot be written as UTF-8
        return
    assert events._parse_plain(raw) is not None or not _plain_text(model, uri, digest, subject)
    got = assert_same(raw)
    assert got[8] == content_digest(event)


def _plain_text(*texts: str | None) -> bool:
    return not any(t is not None and any(0xD800 <= ord(c) < 0xE000 for c in t) for t in texts)


@settings(max_examples=200, deadline=None)
@given(rows=mostly(COUNT), share=mostly(st.floats(0, 1)), start=TIMES, end=TIMES, score=NUMBERS,
       bad=mostly(st.dictionaries(TEXT, st.integers(), max_size=2)), version=mostly(st.none() | TEXT))
def test_any_drift_gets_the_same_answer(rows, share, start, end, score, bad, version):
    assert_same(drift(version=version, window_start=start, window_end=end, rows=rows, drifted_share=share,
                      bad_rows=bad, columns={"c": {"stattest": "ks", "score": score, "threshold": 0.5,
                                                   "drifted": True}}))


@settings(max_examples=100, deadline=None)
@given(item=any_label(), doc=JSONISH)
def test_any_label_or_json_gets_the_same_answer(item, doc):
    assert_same(one_label(**item))
    assert_same(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(raw=bad_events(4096))
def test_every_bad_message_gets_the_same_reason(raw):
    """The reliability suite's bad messages (every field wrong, missing, undecodable, oversized)."""
    assert briefed(raw, 4096)[0] == "error"
    assert_same(raw, 4096)


def test_a_brief_is_immutable():
    brief = parse_brief(arrival())
    with pytest.raises(AttributeError):
        brief.id = "other"  # type: ignore[misc]
    assert brief == parse_brief(arrival())
    assert brief != parse_brief(arrival(id="e2"))


def test_flat_types_and_verdicts_are_briefed_without_building_their_event(monkeypatch):
    """The lean paths are taken for an arrival, a promotion, a rollback, a finished run and a drift or quality
    verdict: no `Event` is built for one. A verdict with a float msgspec writes otherwise than pydantic and a label
    event still have one."""
    built = []
    original = events._brief_of
    monkeypatch.setattr(events, "_brief_of", lambda event, doc: built.append(event.type) or original(event, doc))
    for raw in (arrival(), drift(), quality(), drift(columns={"c": COLUMN}), *(to_bytes(new_event(payload))
                                                                               for payload in FLAT)):
        assert assert_same(raw)[0] == "brief"
    assert built == []
    for raw in (drift(columns={"c": {**COLUMN, "score": 1e16}}), quality(holdout=-2e17), one_label()):
        assert assert_same(raw)[0] == "brief"
    assert built == ["ctloop.drift.detected", "ctloop.quality.degraded", "ctloop.label.observed"]


FLAT = [
    ModelPromoted(model="m", version="2", actor="a", reason="r"),
    ModelPromoted(model="\u00e9", version="2", previous_version="1", actor="\u00e9\"\\\n", reason="", manual=True),
    ModelRolledBack(model="m", from_version="3", to_version="2", actor="ops", reason="quality"),
    RunFinished(run_id="r", model="m", status="Failed", error="boom"),
    RunFinished(run_id="r", model="m", status="Succeeded", idempotency_key="k", trigger_event_id="e", version="4",
                promoted=False),
]


@pytest.mark.parametrize("wire, model", list(events._FLAT_TYPES.items()),
                         ids=lambda x: getattr(x, "__name__", ""))
def test_a_flat_types_struct_declares_its_models_fields_in_order_with_their_defaults(wire, model):
    """What makes msgspec write the payload as pydantic does (a field added to the model must be added here)."""
    data = next(field.type for field in msgspec.structs.fields(wire) if field.name == "data")
    assert [(field.name, "required" if field.required else field.default) for field in msgspec.structs.fields(data)] \
        == [(name, "required" if field.is_required() else field.default) for name, field in model.model_fields.items()]


@pytest.mark.parametrize("payload", FLAT, ids=lambda p: p.event_type)
@pytest.mark.parametrize("subject", [None, "s"])
def test_flat_types_get_the_same_answer(payload, subject):
    raw = to_bytes(new_event(payload, subject=subject))
    assert assert_same(raw)[0] == "brief"
    doc = json.loads(raw)
    for field in doc["data"]:  # each field left out, null, or of another JSON type
        for value in ("__absent__", None, True, 0, 1.5, "", "x", [], {}):
            data = {k: v for k, v in doc["data"].items() if k != field}
            if value != "__absent__":
                data[field] = value
            assert_same(json.dumps({**doc, "data": data}).encode())
    assert_same(json.dumps({**doc, "data": {**doc["data"], "extra": 1}}).encode())


@settings(max_examples=300, deadline=None)
@given(model=mostly(TEXT), run_id=mostly(ANY_TEXT), status=mostly(st.sampled_from(["Succeeded", "Failed", "Error",
                                                                                  "Skipped", "succeeded"])),
       optional=st.dictionaries(st.sampled_from(["idempotency_key", "trigger_event_id", "version", "promoted",
                                                 "error"]), mostly(st.none() | ANY_TEXT | st.booleans())),
       ascii_only=st.booleans())
def test_any_finished_run_gets_the_same_answer(model, run_id, status, optional, ascii_only):
    doc = {"specversion": "1.0", "id": "e1", "type": "ctloop.run.finished", "source": "urn:test",
           "time": "2026-11-01T00:00:00Z", "data": {"run_id": run_id, "model": model, "status": status, **optional}}
    try:
        raw = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")
    except UnicodeEncodeError:
        return
    assert_same(raw)


COLUMN = {"stattest": "ks", "score": 0.25, "threshold": 0.5, "drifted": False}


def quality(**data):
    payload = {"model": "m", "version": "3", "metric": "auc", "value": 0.61, "threshold": 0.7, "holdout": 0.8,
               "rule": "max_drop", "rows": 500, "window_start": "2026-11-01T00:00:00Z",
               "window_end": "2026-11-01T00:05:00.5-03:00", "data_uri": "s3://l/m", **data}
    return arrival(type="ctloop.quality.degraded", data=payload)


@pytest.mark.parametrize("raw", [
    drift(columns={"c": {**COLUMN, "score": score}}) for score in (1e15, 9.99e15, 1e16, 1.5e16, -1e17, 9.2e18, 1e19,
                                                                   5e-324, 1e-300, 0.1, 1, -0.0, 2**53 + 1)
] + [
    quality(value=1e16), quality(threshold=-1e18), quality(holdout=None), quality(holdout=1e300), quality(rows=-1),
    quality(rule="mean"), quality(window_end="2026-11-01"), quality(window_end="2026-11-01T00:00:00"),
    quality(window_start="2026-11-01T00:00:00.1234567+14:00"), quality(window_start="tomorrow"),
    quality(value="0.6"), quality(model=""), quality(extra=1),
    drift(window_start="2026-11-01T00:00:00", window_end="2026-11-01T00:00:00-05:30"),
    drift(columns={"a": COLUMN, "b": {**COLUMN, "threshold": 3e16}}), drift(version="\u00e9\"\\"),
    drift(bad_rows={"x": 2**63 - 1, "y": -(2**63)}), drift(bad_rows={"x": 2**63}), drift(drifted_share=1.5),
    arrival(type="ctloop.drift.detected", subject=None, data=json.loads(drift())["data"]),
    arrival(type="ctloop.quality.degraded", time=None, data=json.loads(quality())["data"]),
    arrival(type=["ctloop.drift.detected"]), arrival(type={"a": 1}), arrival(type=7), arrival(type=None),
    b'{"specversion":"1.0","id":"e","type":"ctloop.quality.degraded","type":"ctloop.drift.detected","source":"s",'
    b'"data":{"model":"m","window_start":"2026-11-01T00:00:00Z","window_end":"2026-11-01T00:00:00Z","rows":1,'
    b'"drifted_share":0.5,"dataset_drift":true,"columns":{}}}',
], ids=lambda raw: repr(raw[:160]))
def test_verdicts_get_the_same_answer(raw):
    assert_same(raw)


@settings(max_examples=300, deadline=None)
@given(value=NUMBERS, threshold=NUMBERS, holdout=mostly(st.none() | NUMBERS), start=TIMES, end=TIMES,
       rule=mostly(st.sampled_from(["min", "max", "max_drop"])), rows=mostly(COUNT))
def test_any_quality_verdict_gets_the_same_answer(value, threshold, holdout, start, end, rule, rows):
    assert_same(quality(value=value, threshold=threshold, holdout=holdout, window_start=start, window_end=end,
                        rule=rule, rows=rows))


@settings(max_examples=300, deadline=None)
@given(columns=st.dictionaries(TEXT, st.fixed_dictionaries({
    "stattest": mostly(TEXT), "score": NUMBERS, "threshold": st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**64), 2**64), "drifted": mostly(st.booleans())}), max_size=3))
def test_any_drift_columns_get_the_same_answer(columns):
    assert_same(drift(columns=columns))


def test_a_date_times_fraction_and_offset_agree_with_datetime():
    for n in range(0, 10**6, 7919):
        when = datetime(2026, 11, 1, 12, 30, 15, n, tzinfo=UTC) + timedelta(hours=n % 5)
        assert parse_brief(arrival(time=when.isoformat())).time == when.timestamp()

"""On every message of the 100k recorded stream, the sensor's parse (`parse_document`, fast path first) gives
what the general path gives: the same event, document, dead-letter reason and content digest; and its brief
(`parse_brief`) gives the same fields, document, digest and reason."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from ctloop import events
from ctloop.bus import Message
from ctloop.events import EventError, content_digest, parse_brief, parse_document
from ctloop.sensors.eventdata import kafka_event_data
from tests.sensors.recorded_stream import MAX_EVENT_BYTES, generate


@pytest.fixture(scope="module")
def stream():
    return generate(17, 100_000)


def digest_as_first_defined(event: events.Event) -> str:
    """The content digest as it was first stored: sha256 of the type and `model_dump_json()` of the payload."""
    return hashlib.sha256(f"{event.type}\n{event.data.model_dump_json()}".encode()).hexdigest()[:32]


def test_every_recorded_message_parses_alike_on_both_paths(stream):
    taken: Counter[str] = Counter()
    for n, record in enumerate(stream):
        raw = record.value
        try:
            fast = parse_document(raw, max_bytes=MAX_EVENT_BYTES)
        except EventError as exc:
            if len(raw) <= MAX_EVENT_BYTES:  # the size check comes before either path
                with pytest.raises(EventError) as general_error:
                    events._parse_general(raw)
                assert general_error.value.reason == exc.reason, n
            taken["dead-lettered"] += 1
            continue
        event, doc = fast
        general, general_doc = events._parse_general(raw)
        assert (event, doc) == (general, general_doc), n
        assert event.model_fields_set == general.model_fields_set, n
        assert event.data.model_fields_set == general.data.model_fields_set, n
        assert content_digest(event) == content_digest(general) == digest_as_first_defined(general), n
        taken["fast" if events._parse_plain(raw) is not None else "general"] += 1
    # The stream holds arrivals and drift verdicts (fast), promotions (general) and malformed messages.
    assert taken["fast"] > 60_000
    assert taken["general"] > 1_000
    assert taken["dead-lettered"] > 10_000


def test_every_recorded_message_is_briefed_as_its_event(stream):
    taken: Counter[str] = Counter()
    for n, record in enumerate(stream):
        raw = record.value
        try:
            event, doc = parse_document(raw, max_bytes=MAX_EVENT_BYTES)
        except EventError as exc:
            with pytest.raises(EventError) as brief_error:
                parse_brief(raw, max_bytes=MAX_EVENT_BYTES)
            assert brief_error.value.reason == exc.reason, n
            taken["dead-lettered"] += 1
            continue
        brief = parse_brief(raw, max_bytes=MAX_EVENT_BYTES)
        assert (brief.id, brief.type, brief.source, brief.subject, brief.time, brief.model, brief.gpu) == (
            event.id, event.type, event.source, event.subject, event.time.timestamp(), event.model,
            bool(getattr(event.data, "gpu", False))), n
        assert brief.digest == content_digest(event) == digest_as_first_defined(event), n
        assert json.dumps(brief.document) == json.dumps(doc), n  # types and key order too
        taken[event.type] += 1
    assert taken["ctloop.data.arrived"] > 50_000
    assert taken["ctloop.drift.detected"] > 5_000
    assert taken["dead-lettered"] > 10_000


def test_the_kafka_event_data_is_what_argo_events_builds():
    body = {"id": "e1"}
    with_all = Message("t", 3, 7, b"m\xff", b"{}", (("a", b"1"), ("b", b"\xfe")), 1_700_000_000_123)
    assert kafka_event_data(with_all, body) == {
        "topic": "t", "key": "m\ufffd", "partition": 3, "timestamp": "1700000000123",
        "headers": {"a": "1", "b": "\ufffd"}, "body": body}
    bare = Message("t", 0, 0, None, b"{}")
    assert kafka_event_data(bare, body) == {"topic": "t", "key": "", "partition": 0, "timestamp": "",
                                            "headers": {}, "body": body}

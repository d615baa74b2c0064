"""`read_labels` gives a label event's labels without building its `Event`: for every message it reads, what
`parse` reads, field by field; everything else (another type, anything `parse` refuses or that the fast path
leaves to the general one) it leaves to `parse`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from ctloop.events import EventError, LabelObserved, LabelsObserved, parse, read_labels
from tests.ctloop.test_events_fast import arrival, label, labels, one_label
from tests.reliability.bad_messages import bad_events


def parsed_labels(raw: bytes) -> list[tuple] | None:
    """What `parse` makes of `raw`, as `read_labels` gives it; None when it refuses it or it is no label event."""
    try:
        event = parse(raw)
    except EventError:
        return None
    data = event.data
    if isinstance(data, LabelObserved):
        items = [(event.id, data)]
    elif isinstance(data, LabelsObserved):
        items = [(f"{event.id}#{i}", item) for i, item in enumerate(data.labels)]
    else:
        return None
    return [(label_id, item.label, item.observed_at, item.prediction_id, item.model, item.key)
            for label_id, item in items]


PLAIN = [
    one_label(), one_label(label=True), one_label(label=0.0), one_label(label=""), one_label(label=2**63 - 1),
    one_label(prediction_id=None, model="m", key="k"), one_label(prediction_id="p", model="m", key=None),
    one_label(observed_at="2026-11-01T00:00:00.1234567+05:30"), labels(label()),
    labels(*[label(prediction_id=f"p-{n}", label=n % 3 == 0) for n in range(1000)]),
    labels(label(), {"model": "m", "key": "k", "label": "yes", "observed_at": "2026-11-01T03:00:00+01:00"}),
    one_label().replace(b'"time": "2026-11-01T00:00:00Z", ', b""),
]
LEFT = [
    one_label(prediction_id=None), one_label(observed_at="2026-11-01T00:00:00"), one_label(label=1e400),
    one_label(observed_at=1700000000), one_label(label=None), one_label(label=2**63), one_label(colour="red"),
    labels(), labels(label(), label(prediction_id=None)), labels(*[label()] * 10_001),
    arrival(type="ctloop.label.observed", time="yesterday", data=label()),
    arrival(type="ctloop.label.observed", time="2026-11-01T00:00:00", data=label()),
    one_label().replace(b'"label": 1', b'"label": NaN'), b"\xef\xbb\xbf" + one_label(),
    arrival(), b"not json",
]


@pytest.mark.parametrize("raw", PLAIN, ids=lambda raw: repr(raw[:120]))
def test_plain_label_events_give_what_parse_gives(raw):
    got = read_labels(raw)
    assert got is not None
    assert got == parsed_labels(raw)


@pytest.mark.parametrize("raw", LEFT, ids=lambda raw: repr(raw[:120]))
def test_what_the_fast_path_doubts_is_left_to_parse(raw):
    assert read_labels(raw) is None


def test_an_oversized_event_is_left_to_parse_for_its_reason():
    raw = labels(*[label()] * 100)
    assert read_labels(raw, max_bytes=len(raw)) is not None
    assert read_labels(raw, max_bytes=len(raw) - 1) is None
    with pytest.raises(EventError, match="oversized"):
        parse(raw, max_bytes=len(raw) - 1)


@settings(max_examples=300, deadline=None)
@given(raw=bad_events(4096))
def test_garbage_gets_no_labels_or_the_ones_parse_reads(raw):
    got = read_labels(raw)
    assert got is None or got == parsed_labels(raw)

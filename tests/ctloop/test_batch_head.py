"""`read_head` reads what the outcomes joiner needs of a prediction batch without its feature cells: for every
batch it gives a head for, the head is what `parse_batch` reads; what it doubts is `parse_batch`'s to take or name.
The one difference, documented: a batch malformed only in feature cells may have a head."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from ctloop.predictions import BatchHead, PredictionBatch, PredictionBatchError, parse_batch, read_head
from tests.reliability.bad_messages import bad_prediction_batches

TS = datetime(2026, 3, 1, 12, tzinfo=UTC)


def head_of(batch: PredictionBatch, key: str | None) -> BatchHead:
    """The head `parse_batch`'s batch implies."""
    keys = batch.column(key) if key is not None else None
    return BatchHead(batch.model, batch.version, batch.role, batch.ts, batch.count, batch.ids, keys)


def columnar(**fields) -> bytes:
    doc = {"model": "churn", "columns": ["customer", "x"], "data": [[7, 1.5], [8, None]], "predictions": [0, 1],
           "ts": "2026-03-01T12:00:00Z", **fields}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


VALID = [
    columnar(), columnar(version="3", ids=["k-0", "k-1"], ts="2026-03-01T12:00:00Z", role="shadow"),
    columnar(ts="2026-03-01T12:00:00"), columnar(ts=1772366400), columnar(version=None, ids=None),
    columnar(columns=["x", "y"], data=[["a", {"n": 1}], [[1], True]]), columnar(data=[], predictions=[]),
    columnar(columns=..., data=..., rows=[{"customer": 7, "x": 1.0}, {"x": 2.0}]),
    columnar(columns=..., data=..., rows=[{"customer": "c-1"}, {"customer": 2.0}]),
    columnar(rows=None), columnar(columns=None, data=None, rows=[{"customer": 1}]),
    columnar().replace(b'"predictions"', b'"predictions": [], "predictions"'),  # both read the last
]


@pytest.mark.parametrize("raw", VALID, ids=repr)
@pytest.mark.parametrize("key", [None, "customer", "absent"])
def test_a_valid_batch_has_the_head_parse_batch_reads(raw, key):
    head = read_head(raw, lambda model: key)
    assert head is None or head == head_of(parse_batch(raw), key)


@pytest.mark.parametrize("raw", [columnar(), VALID[1], VALID[7]], ids=repr)
def test_plain_batches_are_read_without_the_full_parse(raw):
    assert read_head(raw, lambda model: "customer") == head_of(parse_batch(raw), "customer")


def test_a_batch_without_a_time_is_stamped_now():
    before = datetime.now(UTC)
    head = read_head(columnar(ts=...))
    assert head is not None and before <= head.ts <= datetime.now(UTC)


@pytest.mark.parametrize("raw", [
    columnar(model=""), columnar(model=7), columnar(version=3), columnar(predictions=[0]), columnar(ids=["a"]),
    columnar(ids=[1, 2]), columnar(role="canary"), columnar(role=None), columnar(ts="yesterday"), columnar(extra=1),
    columnar(columns=["x", "x"]), columnar(columns=...), columnar(data=...), columnar(data=None),
    columnar(rows=[{"x": 1}, {"x": 2}]), columnar(data=7),
    columnar(columns=..., data=..., rows=[1, 2]), b"not json", b"[]",
], ids=repr)
def test_what_the_joiner_reads_being_wrong_is_left_to_parse_batch(raw):
    assert read_head(raw, lambda model: "customer") is None
    with pytest.raises(PredictionBatchError):
        parse_batch(raw)


def test_a_row_of_the_wrong_width_is_left_to_parse_batch_when_the_key_is_read():
    raw = columnar(data=[[7, 1.5], [8, 1.0, 9]])
    assert read_head(raw, lambda model: "customer") is None
    with pytest.raises(PredictionBatchError, match="data row 1 has 3 values for 2 columns"):
        parse_batch(raw)
    # Without a key the joiner reads no feature row: the monitor dead-letters this batch, the joiner may store it.
    assert read_head(raw) == BatchHead("churn", None, "champion", read_head(raw).ts, 2, None, None)


@settings(max_examples=300, deadline=None)
@given(raw=bad_prediction_batches(4096))
def test_broken_batches_get_no_head_or_the_one_parse_batch_reads(raw):
    head = read_head(raw, lambda model: "x")
    try:
        batch = parse_batch(raw)
    except PredictionBatchError:
        assert head is None
        return
    assert head is None or head == head_of(batch, "x")

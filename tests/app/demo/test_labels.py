"""The demo's outcomes: one label event per served prediction, in no particular order, stable ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ctloop.app.demo.labels import label_events
from ctloop.events import LabelObserved, parse


def test_each_served_prediction_gets_one_label_event_shuffled_with_a_stable_id():
    now = datetime.now(UTC)
    ids = [f"b-{i}" for i in range(50)]
    events = [parse(raw) for raw in label_events(ids, [i % 2 for i in range(50)], now, seed=1)]
    assert all(isinstance(e.data, LabelObserved) for e in events)
    assert sorted((e.data.prediction_id, e.data.label) for e in events) == sorted(
        (f"b-{i}", i % 2) for i in range(50))
    assert [e.data.prediction_id for e in events] != ids  # out of order
    again = [parse(raw) for raw in label_events(ids, [i % 2 for i in range(50)], now, seed=2)]
    assert {e.id for e in events} == {e.id for e in again}


def test_ids_and_labels_must_pair_up():
    with pytest.raises(ValueError, match="3 prediction ids but 2 labels"):
        label_events(["a", "b", "c"], [1, 0], datetime.now(UTC), seed=0)

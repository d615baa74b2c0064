"""The prediction log: what a scored request is logged as, and the group commits (what arrives within the
linger is one transaction, in order)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctloop.deploy.scoring import parse_request
from ctloop.deploy.serving import NO_SIGNATURE, PredictionLog, served_batch
from ctloop.embedded_bus import EmbeddedBus
from ctloop.predictions import PredictionBatch, parse_batch


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[EmbeddedBus]:
    bus = EmbeddedBus(tmp_path / "bus.db")
    yield bus
    bus.close()


def batch(i: int) -> PredictionBatch:
    return PredictionBatch(model="m", version="1", rows=[{"x": float(i)}], predictions=[i], ids=[f"id-{i}"])


def logged(bus: EmbeddedBus) -> list[PredictionBatch]:
    return [parse_batch(m.value) for m in bus.read_all("predictions")]


def test_batches_arriving_within_the_linger_are_one_commit_in_served_order_and_close_does_not_wait(bus):
    log = PredictionLog(bus, "predictions", linger_s=30.0)
    for i in range(40):
        log.submit(batch(i))
    started = time.monotonic()
    log.close()
    assert time.monotonic() - started < 10, "close commits the lingering group instead of waiting the linger out"
    assert (log.published, log.dropped, log.commits) == (40, 0, 1)
    assert [b.ids for b in logged(bus)] == [[f"id-{i}"] for i in range(40)]
    assert [m.offset for m in bus.read_all("predictions")] == list(range(40))


def test_a_lone_batch_is_committed_after_the_linger_without_waiting_for_more(bus):
    log = PredictionLog(bus, "predictions", linger_s=0.05)
    try:
        log.submit(batch(7))
        deadline = time.monotonic() + 10
        while not bus.read_all("predictions") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [b.ids for b in logged(bus)] == [["id-7"]]
        assert log.published == 1
    finally:
        log.close()


def test_a_group_is_capped_at_max_group(bus):
    log = PredictionLog(bus, "predictions", linger_s=30.0, max_group=10)
    for i in range(25):
        log.submit(batch(i))
    log.close()
    assert (log.published, log.commits) == (25, 3)
    assert [b.ids for b in logged(bus)] == [[f"id-{i}"] for i in range(25)]


def test_a_batch_that_cannot_be_built_is_counted_and_the_rest_of_its_group_is_logged(bus):
    def broken() -> PredictionBatch:
        raise ValueError("no rows")

    log = PredictionLog(bus, "predictions", linger_s=30.0)
    log.submit(batch(0))
    log.submit_later(broken, 1)
    log.submit(batch(2))
    log.close()
    assert (log.published, log.dropped) == (2, 1)
    assert [b.ids for b in logged(bus)] == [["id-0"], ["id-2"]]


class OneAtATime:
    """A bus with no group commit (as Kafka's, whose producer batches by itself), over the embedded one."""

    def __init__(self, inner: EmbeddedBus) -> None:
        self.inner = inner
        self.flushes = 0

    def publish(self, topic: str, value: bytes, *, key=None, headers=()) -> None:
        self.inner.publish(topic, value, key=key, headers=headers)

    def flush(self, timeout_s: float = 10.0) -> None:
        self.flushes += 1


def test_a_bus_without_group_commits_gets_each_batch_published_in_order_then_flushed(bus):
    plain = OneAtATime(bus)
    log = PredictionLog(plain, "predictions", linger_s=30.0)  # type: ignore[arg-type]
    for i in range(20):
        log.submit(batch(i))
    log.close()
    assert (log.published, log.commits) == (20, 0)
    assert plain.flushes >= 1
    assert [b.ids for b in logged(bus)] == [[f"id-{i}"] for i in range(20)]


@pytest.mark.parametrize("payload", [
    b'{"dataframe_records": [{"x": 1, "c": "a"}, {"c": "b", "x": 2}]}',
    b'{"inputs": {"x": [1, 2], "c": ["a", "b"]}}',
    b'{"dataframe_split": {"columns": ["x", "c"], "data": [[1, "a"], [2, "b"]]}, "params": {"k": 1}}',
])
def test_rows_that_share_their_features_are_logged_columnar_whatever_the_format(payload):
    request = parse_request(payload, NO_SIGNATURE)
    logged = parse_batch(served_batch("m", "1", request, [0, 1], ["a-0", "a-1"], datetime.now(UTC)).to_bytes())
    assert (logged.columns, logged.data) == (["x", "c"], [[1, "a"], [2, "b"]])


def test_rows_whose_features_differ_are_logged_as_rows_a_missing_feature_is_not_a_null():
    request = parse_request(b'{"dataframe_records": [{"x": 1}, {"x": 2, "c": "b"}]}', NO_SIGNATURE)
    shadow = served_batch("m", "2", request, [0, 1], ["a-0", "a-1"], datetime.now(UTC), "shadow")
    logged = parse_batch(shadow.to_bytes())
    assert not logged.columnar and logged.rows == [{"x": 1}, {"x": 2, "c": "b"}] and logged.role == "shadow"

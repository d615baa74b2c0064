import pytest

from ctloop.predictions import PredictionBatch, PredictionBatchError, parse_batch


def test_batch_round_trips_and_keeps_rows_as_served():
    batch = PredictionBatch(model="m", version="3", rows=[{"x": 1.5, "c": "a"}, {"x": "oops"}], predictions=[0, 1])
    again = parse_batch(batch.to_bytes())
    assert again == batch
    assert again.rows[1] == {"x": "oops"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "invalid prediction batch"),
        (b'{"model": "m", "rows": [{}], "predictions": []}', "1 rows but 0 predictions"),
        (b'{"rows": [], "predictions": []}', "at model"),
        (b'{"model": "m", "rows": [], "predictions": [], "role": "canary"}', "at role"),
    ],
)
def test_bad_batches_are_named(raw, message):
    with pytest.raises(PredictionBatchError, match=message):
        parse_batch(raw)


def test_a_message_from_before_roles_is_a_champion_batch():
    old = b'{"model": "m", "version": "2", "rows": [{"x": 1}], "predictions": [0], "ids": ["a-0"]}'
    assert parse_batch(old).role == "champion"


def test_a_shadow_batch_round_trips_with_its_role():
    batch = PredictionBatch(model="m", version="1", rows=[{"x": 1}], predictions=[1], ids=["a-0"], role="shadow")
    assert parse_batch(batch.to_bytes()).role == "shadow"

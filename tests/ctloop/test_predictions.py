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
    ],
)
def test_bad_batches_are_named(raw, message):
    with pytest.raises(PredictionBatchError, match=message):
        parse_batch(raw)

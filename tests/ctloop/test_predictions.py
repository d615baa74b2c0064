import json
from datetime import UTC, datetime

import jsonschema
import pytest

from ctloop.predictions import PredictionBatch, PredictionBatchError, columnar_form, parse_batch, row_of


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


# The columnar form: what serving writes.

COLUMNS = ["x", "c"]
DATA = [[1.5, "a"], [2.5, "b"], [None, "a"]]


def columnar(**fields) -> PredictionBatch:
    return PredictionBatch(**{"model": "m", "version": "3", "columns": COLUMNS, "data": DATA,
                              "predictions": [0, 1, 1], "ids": ["i-0", "i-1", "i-2"]} | fields)


def test_a_columnar_batch_round_trips_and_carries_only_its_form():
    batch = columnar()
    doc = json.loads(batch.to_bytes())
    assert "rows" not in doc and (doc["columns"], doc["data"]) == (COLUMNS, DATA)
    again = parse_batch(batch.to_bytes())
    assert again == batch and again.columnar and again.count == 3


def test_a_rows_batch_writes_no_columnar_fields():
    doc = json.loads(PredictionBatch(model="m", rows=[{"x": 1}], predictions=[0]).to_bytes())
    assert "columns" not in doc and "data" not in doc and doc["rows"] == [{"x": 1}]


def test_readers_get_the_same_rows_from_either_form():
    as_rows = PredictionBatch(model="m", rows=[dict(zip(COLUMNS, values, strict=True)) for values in DATA],
                              predictions=[0, 1, 1])
    for batch in (columnar(), as_rows):
        assert batch.count == 3
        assert batch.column("x") == [1.5, 2.5, None] and batch.column("c") == ["a", "b", "a"]
        assert batch.column("nope") is None
        assert batch.row(1) == {"x": 2.5, "c": "b"}
        assert list(batch.iter_rows()) == batch.rows == as_rows.rows


def test_a_feature_some_rows_lack_reads_as_none_for_them():
    batch = PredictionBatch(model="m", rows=[{"k": "a"}, {"x": 1}], predictions=[0, 1])
    assert batch.column("k") == ["a", None] and batch.column("z") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data": [[1.5, "a"], [2.5], [None, "a"]]}, "data row 1 has 1 values for 2 columns"),
        ({"columns": ["x", "x"]}, "columns names a column twice"),
        ({"rows": [{"x": 1}] * 3}, "either rows, or columns and data, not both"),
        ({"data": None}, "needs rows, or both columns and data"),
        ({"predictions": [0, 1]}, "3 rows but 2 predictions"),
        ({"ids": ["i-0"]}, "3 rows but 1 ids"),
    ],
)
def test_bad_columnar_batches_are_named(fields, message):
    doc = json.loads(columnar().to_bytes()) | fields
    with pytest.raises(PredictionBatchError, match=message):
        parse_batch(json.dumps(doc))


def test_orjson_writes_what_pydantic_writes():
    ts = datetime(2026, 11, 30, 6, 0, 0, 123456, tzinfo=UTC)
    rows = PredictionBatch.model_construct(model="m", version="3", rows=[{"a": 1, "b": 2.5, "c": "x", "d": None,
                                                                          "e": True}], predictions=[0.25], ts=ts)
    for batch, unused in ((rows, {"columns", "data"}), (columnar(ts=ts), {"records"})):
        assert json.loads(batch.to_bytes()) == json.loads(batch.model_dump_json(by_alias=True, exclude=unused))


def test_what_orjson_cannot_write_is_still_written():
    batch = PredictionBatch.model_construct(model="m", version="3", columns=["a"], data=[[2**70]], predictions=[1],
                                            ids=None, ts=datetime.now(UTC))
    assert parse_batch(batch.to_bytes()).column("a") == [2**70]


def test_rows_with_the_same_features_have_a_columnar_form():
    assert columnar_form([{"x": 1, "c": "a"}, {"c": "b", "x": 2}]) == (["x", "c"], [[1, "a"], [2, "b"]])
    assert columnar_form([{"x": 1}, {"x": 2, "c": "b"}]) is None, "a missing feature is not a null"
    assert columnar_form([]) is None


def test_row_of_reads_one_row_of_a_decoded_message_in_either_form():
    doc = json.loads(columnar().to_bytes())
    assert row_of(doc, 2) == {"x": None, "c": "a"}
    assert row_of({"rows": [{"x": 1}]}, 0) == {"x": 1}


def test_the_published_json_schema_takes_both_forms_and_refuses_neither_or_both():
    schema = PredictionBatch.model_json_schema()
    jsonschema.validate(json.loads(columnar().to_bytes()), schema)
    jsonschema.validate(json.loads(PredictionBatch(model="m", rows=[{"x": 1}], predictions=[0]).to_bytes()), schema)
    for bad in ({"model": "m", "predictions": []}, json.loads(columnar().to_bytes()) | {"rows": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)

"""Reading MLflow's scoring payloads: the float64 matrix for all-double signatures, and when it is not taken."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctloop.deploy.scoring import BadRequest, Features, parse_request

NAMES = ("a", "b", "c")
DOUBLES = Features(NAMES, frozenset(NAMES), matrix=True)
UNTYPED = Features(NAMES, frozenset(NAMES))


def split(columns: list[str], data: list[list], **extra) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}, **extra}).encode()


def test_numbers_for_double_features_become_one_float64_matrix_in_signature_order():
    request = parse_request(split(["c", "a", "b"], [[3, 1.5, 2.0], [6.25, 4, 5]]), DOUBLES)
    assert request.matrix is not None and request.matrix.dtype == np.float64
    assert request.matrix.tolist() == [[1.5, 2.0, 3.0], [4.0, 5.0, 6.25]]
    assert request.count == 2 and request.params is None


def test_the_rows_of_a_matrix_request_are_the_rows_as_sent():
    request = parse_request(split(["c", "a", "b"], [[3, 1.5, 2.0]]), DOUBLES)
    assert request.rows == [{"c": 3, "a": 1.5, "b": 2.0}]  # the int stays an int in the prediction log


@pytest.mark.parametrize("data", [
    [[True, 1.0, 2.0]],  # MLflow refuses booleans for a double column; numpy would read 1.0
    [[1.0, "2", 3.0]],
    [[1.0, None, 3.0]],
    [[1.0, [2.0], 3.0]],
    [[1.0, {"x": 2}, 3.0]],
])
def test_anything_but_numbers_takes_the_row_path_and_its_checks(data):
    body = split(list(NAMES), data)
    try:
        request = parse_request(body, DOUBLES)
    except BadRequest as refused:
        with pytest.raises(BadRequest) as before:
            parse_request(body, UNTYPED)
        assert str(refused) == str(before.value)
        return
    assert request.matrix is None
    assert request.rows == parse_request(body, UNTYPED).rows == [dict(zip(NAMES, data[0], strict=True))]


def test_missing_or_unknown_columns_get_the_same_refusal_as_before():
    for columns, data, reason in ((["a", "b"], [[1.0, 2.0]], "missing features ['c']"),
                                  (["a", "b", "c", "d"], [[1.0, 2.0, 3.0, 4.0]], "unknown features ['d']")):
        with pytest.raises(BadRequest, match=reason.replace("[", r"\[").replace("]", r"\]")):
            parse_request(split(columns, data), DOUBLES)


def test_params_or_another_format_take_the_row_path():
    with_params = parse_request(split(list(NAMES), [[1.0, 2.0, 3.0]], params={"k": 1}), DOUBLES)
    records = parse_request(json.dumps({"dataframe_records": [{"a": 1.0, "b": 2.0, "c": 3.0}]}).encode(), DOUBLES)
    assert with_params.matrix is None and with_params.params == {"k": 1}
    assert records.matrix is None and records.rows == [{"a": 1.0, "b": 2.0, "c": 3.0}]


def test_a_model_without_an_all_double_signature_never_gets_a_matrix():
    assert parse_request(split(list(NAMES), [[1.0, 2.0, 3.0]]), UNTYPED).matrix is None


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[NaN, 1, 2]]}}', "must be a finite scalar"),
    (b'{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1e400, 1, 2]]}}', "must be a finite scalar"),
    (b'{"dataframe_split": ', "body is not JSON"),
    (b"\xff\xfe", "body is not JSON"),
])
def test_what_the_fast_parser_refuses_is_decided_as_before(body, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_request(body, DOUBLES)

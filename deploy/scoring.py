"""MLflow's scoring protocol, read into rows: what a request to `/invocations` (or `/predict`) asks to score.

A body is one JSON object with exactly one input key and, optionally, `params` (passed to the model's
`predict`), as `mlflow models serve` accepts them:

- `dataframe_split`: `{"columns": [...], "data": [[...], ...]}` (an `index` is allowed and ignored);
- `dataframe_records`: `[{"col": value, ...}, ...]`;
- `instances` or `inputs`: a list of row objects, or one object of equal-length columns;
- `rows`: ctloop's own name for `dataframe_records` (what `POST /predict` always took).

Every row is checked against the model's signature (missing or unknown features, non-scalar or
non-finite values) before the model sees it, so a bad request is refused with a reason instead of
failing inside the model.

When every feature is a double (`Features.matrix`), a `dataframe_split` of plain numbers is read
straight into one float64 array in the signature's column order (`ScoringRequest.matrix`), with no
dict per row: that is already the frame MLflow's schema enforcement would produce. Anything else
(other formats, strings, booleans, nulls, missing or unknown columns, `params`) takes the row-by-row
path, so its checks and errors are unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import Any

import numpy as np
import orjson

from ctloop.httpserver import HttpError
from ctloop.predictions import columnar_form

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs", "rows")
PARAMS_KEY = "params"
MAX_ROWS = 10_000

_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)


class BadRequest(HttpError):
    """A request that cannot be scored; `str()` is the reason the client receives."""

    def __init__(self, status: HTTPStatus, message: str, kind: str = "BAD_REQUEST") -> None:
        super().__init__(status, message, kind)


@dataclass(frozen=True)
class Features:
    """What the model's signature says about its input columns; `names is None` when it has no signature."""

    names: tuple[str, ...] | None
    required: frozenset[str] = frozenset()
    matrix: bool = False  # every feature is a required double: numbers can go to the model as one float64 array


@dataclass(frozen=True)
class ScoringRequest:
    """One request's input: `params` for `predict`, `count` rows, and `rows` as the client sent them (one
    dict per row, built on first use); `matrix`, when set, holds the same rows as one float64 array in the
    signature's column order; `split()` gives them as columns and lists, the prediction log's form."""

    params: dict[str, Any] | None
    count: int
    matrix: np.ndarray | None = None
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)
    _split: tuple[list[str], list[list[Any]]] | None = field(default=None, repr=False)

    @classmethod
    def of_rows(cls, rows: list[dict[str, Any]], params: dict[str, Any] | None = None) -> ScoringRequest:
        return cls(params, len(rows), _records=rows)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        if self._records is not None:
            return self._records
        columns, data = self._split  # type: ignore[misc]  # one of the two is always set
        return [dict(zip(columns, row, strict=True)) for row in data]

    def split(self) -> tuple[list[str], list[list[Any]]] | None:
        """`(columns, data)` as a `dataframe_split` sent them, or made from rows that all have the same
        features; None when the rows' features differ."""
        return self._split if self._split is not None else columnar_form(self.rows)


def parse_request(body: bytes, features: Features, *, max_rows: int = MAX_ROWS) -> ScoringRequest:
    """The rows and params of a scoring request, or `BadRequest` naming what is wrong."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body must be a JSON object, got {type(doc).__name__}")
    given = [key for key in INPUT_KEYS if key in doc]
    if len(given) != 1:
        found = f"got {given}" if given else "got none"
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body must have exactly one input field of {list(INPUT_KEYS)}; "
                                                 f"{found}")
    unknown = sorted(set(doc) - {given[0], PARAMS_KEY})
    if unknown:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown fields {unknown}; expected {given[0]!r} and optionally "
                                                 f"{PARAMS_KEY!r}")
    params = doc.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"'params' must be an object, got {type(params).__name__}")
    key = given[0]
    if key == "dataframe_split":
        columns, data = _split(doc[key], max_rows)
        matrix = _matrix(columns, data, features, body) if features.matrix and not params else None
        if matrix is not None:
            return ScoringRequest(None, len(data), matrix, _split=(columns, data))
        rows = [dict(zip(columns, row, strict=True)) for row in data]
        check_rows(rows, features)
        return ScoringRequest(params or None, len(rows), _records=rows, _split=(columns, data))
    rows = _records(key, doc[key], max_rows)
    check_rows(rows, features)
    return ScoringRequest.of_rows(rows, params or None)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # orjson is stricter (NaN, lone surrogates, a BOM): the standard parser decides, as it always did
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None


def _matrix(columns: list[str], data: list[list[Any]], features: Features, body: bytes) -> np.ndarray | None:
    """`data` as float64 in the signature's column order when it holds only numbers for exactly the
    signature's columns; None sends it down the row-by-row path."""
    if len(columns) != len(features.names or ()) or set(columns) != set(features.names or ()):
        return None
    # numpy would read true/false as 1/0 without a word; MLflow refuses booleans for a double column.
    if b"true" in body or b"false" in body:
        return None
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged: nested lists of different lengths
    if values.ndim != 2 or values.dtype.kind not in "fiu":
        return None  # strings, nulls or nested values
    if values.dtype.kind != "f":
        values = values.astype(np.float64)  # JSON has one number type: 1 for a double feature is 1.0
    if not np.isfinite(values).all():
        return None
    if tuple(columns) != features.names:
        values = values[:, [columns.index(name) for name in features.names]]  # type: ignore[union-attr]
    return values


def _too_many(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{count} rows exceed the limit of {max_rows}",
                         "TOO_MANY_ROWS")


def _split(value: Any, max_rows: int) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(value, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"'dataframe_split' must be an object, got {type(value).__name__}")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'dataframe_split.columns' must be a list of column names")
    if len(set(columns)) != len(columns):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'dataframe_split.columns' names a column twice")
    if not isinstance(data, list) or not data:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'dataframe_split.data' must be a non-empty list of rows")
    _too_many(len(data), max_rows)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"'dataframe_split.data' row {i} must be a list of "
                                                     f"{len(columns)} values, one per column")
    return columns, data


def _records(key: str, value: Any, max_rows: int) -> list[dict[str, Any]]:
    if isinstance(value, dict) and key in ("instances", "inputs"):
        return _columns(key, value, max_rows)
    if not isinstance(value, list) or not value:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{key!r} must be a non-empty list of objects")
    _too_many(len(value), max_rows)
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} must be an object, got {type(row).__name__}")
    return value


def _columns(key: str, value: dict[str, Any], max_rows: int) -> list[dict[str, Any]]:
    lengths = {len(column) if isinstance(column, list) else -1 for column in value.values()}
    if not value or -1 in lengths or len(lengths) != 1 or 0 in lengths:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{key!r} as an object must map each column to a non-empty list, "
                                                 "all of the same length")
    count = lengths.pop()
    _too_many(count, max_rows)
    return [{name: column[i] for name, column in value.items()} for i in range(count)]


def check_rows(rows: list[dict[str, Any]], features: Features) -> None:
    """Raise `BadRequest` for the first row with a non-scalar value or, given a signature, wrong features."""
    known = frozenset(features.names) if features.names is not None else None
    for i, row in enumerate(rows):
        for key, value in row.items():
            kind = type(value)  # an exact-type check: this loop runs for every value of every request
            if kind not in _SCALAR_TYPES or (kind is float and not math.isfinite(value)):
                if isinstance(value, _SCALARS) and not isinstance(value, float):
                    continue  # a subclass of a scalar (an IntEnum from a Python client, say) is still one
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} feature {key!r} must be a finite scalar")
        if known is None or row.keys() == known:
            continue
        missing = sorted(features.required - row.keys())
        if missing:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} is missing features {missing}")
        extra = sorted(row.keys() - known)
        if extra:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} has unknown features {extra}")

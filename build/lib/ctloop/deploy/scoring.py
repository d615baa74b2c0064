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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ctloop.httpserver import HttpError

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


@dataclass(frozen=True)
class ScoringRequest:
    rows: list[dict[str, Any]]
    params: dict[str, Any] | None


def parse_request(body: bytes, features: Features, *, max_rows: int = MAX_ROWS) -> ScoringRequest:
    """The rows and params of a scoring request, or `BadRequest` naming what is wrong."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
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
    rows = _split(doc[key], max_rows) if key == "dataframe_split" else _records(key, doc[key], max_rows)
    check_rows(rows, features)
    return ScoringRequest(rows, params or None)


def _too_many(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{count} rows exceed the limit of {max_rows}",
                         "TOO_MANY_ROWS")


def _split(value: Any, max_rows: int) -> list[dict[str, Any]]:
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
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"'dataframe_split.data' row {i} must be a list of "
                                                     f"{len(columns)} values, one per column")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


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

"""Hypothesis strategies for messages no consumer may accept: each must be dead-lettered with a reason."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from ctloop.events import PAYLOADS

SPEC = {"specversion": "1.0", "id": "bad-1", "type": "ctloop.data.arrived", "source": "urn:test",
        "time": "2026-11-28T10:00:00+00:00", "datacontenttype": "application/json",
        "data": {"model": "churn", "uri": "file:///data/churn/x", "digest": "d-x", "size": 10, "gpu": False}}

NOT_A_STRING = st.one_of(st.integers(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                                st.integers(),
                                                                                                max_size=2))
WRONG_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("id",): NOT_A_STRING, ("type",): NOT_A_STRING, ("source",): NOT_A_STRING,
    ("specversion",): st.one_of(NOT_A_STRING, st.sampled_from(["0.3", "2.0", ""])),
    ("time",): st.one_of(st.integers(), st.sampled_from(["yesterday", "2026-13-45T99:00:00Z"])),
    ("data",): st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)),
    ("data", "model"): st.one_of(NOT_A_STRING, st.just("")),
    ("data", "uri"): st.one_of(NOT_A_STRING, st.just("")),
    ("data", "size"): st.one_of(st.integers(max_value=-1), st.sampled_from(["big", [1]])),
    ("data", "gpu"): st.one_of(st.sampled_from(["perhaps", [True], {"on": 1}]), st.integers(min_value=2)),
}
REQUIRED = [("specversion",), ("id",), ("type",), ("source",), ("data",), ("data", "model"), ("data", "uri")]


def _envelope() -> dict[str, Any]:
    return json.loads(json.dumps(SPEC))


def _parent(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    _parent(doc, path)[path[-1]] = value
    return doc


def _drop(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    del _parent(doc, path)[path[-1]]
    return doc


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


wrong_types = st.sampled_from(sorted(WRONG_VALUES)).flatmap(
    lambda path: WRONG_VALUES[path].map(lambda value: _encode(_set(_envelope(), path, value))))
missing_fields = st.sampled_from(REQUIRED).map(lambda path: _encode(_drop(_envelope(), path)))
unknown_types = st.text(min_size=1, max_size=40).filter(lambda t: t not in PAYLOADS).map(
    lambda t: _encode(_set(_envelope(), ("type",), t)))
unknown_fields = st.text(min_size=1, max_size=10).filter(lambda k: k not in SPEC["data"]).map(
    lambda k: _encode(_set(_envelope(), ("data", k), "surprise")))
invalid_utf8 = st.binary(max_size=50).map(lambda b: b'{"specversion": "1.0", "id": "' + b + b'\xff\xfe"}')
not_json = st.binary(min_size=0, max_size=200).filter(lambda b: not _is_json(b))
not_an_object = st.sampled_from([b"[]", b"42", b'"text"', b"null", b"true"])


def huge(limit: int) -> st.SearchStrategy[bytes]:
    """Otherwise valid events padded past `limit` bytes with an extension attribute."""
    return st.integers(min_value=limit + 1, max_value=limit * 4).map(
        lambda size: _encode({**_envelope(), "padding": "x" * size}))


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def bad_events(limit: int) -> st.SearchStrategy[bytes]:
    return st.one_of(wrong_types, missing_fields, unknown_types, unknown_fields, invalid_utf8, not_json,
                     not_an_object, huge(limit))


BATCH = {"model": "churn", "version": "3", "rows": [{"x": 1.0, "y": 2.0, "c": "a"}], "predictions": [0],
         "ts": "2026-03-01T00:00:00+00:00"}
WRONG_BATCH_VALUES: dict[str, list[Any]] = {
    "model": [7, [], {}, ""], "version": [[1], {"v": 3}], "rows": ["nope", 7, [1, 2]], "predictions": ["nope", 7],
    "ts": ["yesterday", [1]],
}
broken_batches = st.one_of(
    st.sampled_from(["model", "rows", "predictions"]).map(lambda f: {k: v for k, v in BATCH.items() if k != f}),
    st.sampled_from([(f, v) for f, values in WRONG_BATCH_VALUES.items() for v in values]).map(
        lambda fv: {**BATCH, fv[0]: fv[1]}),
    st.integers(min_value=2, max_value=5).map(lambda n: {**BATCH, "predictions": [0] * n}),
).map(lambda doc: json.dumps(doc).encode())


def bad_prediction_batches(limit: int) -> st.SearchStrategy[bytes]:
    """The same garbage, plus prediction batches with wrong types, missing fields, rows without predictions."""
    return st.one_of(broken_batches, invalid_utf8, not_json, not_an_object, huge(limit))

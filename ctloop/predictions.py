"""The prediction log: what serving publishes to `settings.topics.predictions` and the monitor reads.

One message is one JSON `PredictionBatch`: many rows per message, because per-row messages cap a
Kafka/Faust pipeline at a few hundred messages per second. The rows are the model's input features as
served, in one of two forms:

- columnar (what serving writes): `columns` names the features once and `data[i]` holds row i's values
  in that order, exactly MLflow's `dataframe_split`;
- rows (older messages, other producers, rows whose features differ): `rows[i]` is row i as an object.

Either way `predictions[i]` belongs to row i, and `ids[i]`, when present, is the id serving returned to
the client for that prediction (what a later label names). Readers take both forms through one model:
`count`, `column(name)`, `row(i)`, `iter_rows()` and `rows` make dicts only for whoever asks for them.
Values are as served, possibly malformed: the monitor counts bad cells instead of rejecting the batch.

`role` says which model answered: "champion" (the default, and what older messages without the field
mean) for the version whose predictions the client received, "shadow" for a version scored beside it on
the same rows, never returned; a shadow batch carries the champion batch's ids, so a label scores both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class PredictionBatchError(ValueError):
    """A message that is not a prediction batch; the message says why."""


ROLES = ("champion", "shadow")


class PredictionBatch(BaseModel):
    """One served batch: its rows (columnar `columns` + `data`, or `rows` of objects), one prediction per row."""

    # What the validator below checks, said in the schema for readers that validate the JSON themselves.
    model_config = ConfigDict(frozen=True, extra="forbid",
                              json_schema_extra={"oneOf": [{"required": ["rows"]}, {"required": ["columns", "data"]}]})

    model: str = Field(min_length=1)
    version: str | None = None
    # "rows" in the JSON; in Python `rows` is the reader that gives dicts in both forms, `records` the field.
    records: list[dict[str, Any]] | None = Field(
        default=None, alias="rows", description="the rows form: row i as an object (absent in the columnar form)")
    columns: list[str] | None = Field(
        default=None, description="the columnar form: the feature names, once (absent in the rows form)")
    data: list[list[Any]] | None = Field(
        default=None, description="the columnar form: data[i] is row i's values in `columns` order")
    predictions: list[Any]
    ids: list[str] | None = Field(default=None, description="the served prediction ids, one per row")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="when the batch was served")
    role: Literal["champion", "shadow"] = Field(
        default="champion", description="champion: the answer the client got; shadow: scored beside it, never returned")

    @model_validator(mode="after")
    def _one_form_one_prediction_per_row(self) -> PredictionBatch:
        if self.records is not None:
            if self.columns is not None or self.data is not None:
                raise ValueError("a batch has either rows, or columns and data, not both")
        elif self.columns is None or self.data is None:
            raise ValueError("a batch needs rows, or both columns and data")
        else:
            if len(set(self.columns)) != len(self.columns):
                raise ValueError("columns names a column twice")
            width = len(self.columns)
            for i, values in enumerate(self.data):
                if len(values) != width:
                    raise ValueError(f"data row {i} has {len(values)} values for {width} columns")
        n = self.count
        if len(self.predictions) != n:
            raise ValueError(f"{n} rows but {len(self.predictions)} predictions")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"{n} rows but {len(self.ids)} ids")
        return self

    @property
    def columnar(self) -> bool:
        return self.records is None

    @property
    def count(self) -> int:
        """How many rows (and predictions) the batch holds."""
        return len(self.records) if self.records is not None else len(self.data or ())

    def column(self, name: str) -> list[Any] | None:
        """Every row's value of feature `name`, in row order (None for a row without it, in the rows form);
        None when no row has the feature."""
        if self.records is None:
            try:
                j = (self.columns or []).index(name)
            except ValueError:
                return None
            return [values[j] for values in self.data or ()]
        values = [row.get(name) for row in self.records]
        return values if any(name in row for row in self.records) else None

    def row(self, i: int) -> dict[str, Any]:
        """Row `i` as a dict (a new one in the columnar form)."""
        if self.records is not None:
            return self.records[i]
        return dict(zip(self.columns or (), (self.data or [])[i], strict=True))

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every row as a dict, made as it is reached in the columnar form."""
        if self.records is not None:
            return iter(self.records)
        columns = self.columns or []
        return (dict(zip(columns, values, strict=True)) for values in self.data or ())

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict, made on each access in the columnar form (prefer `column`, `row`, `iter_rows`)."""
        return self.records if self.records is not None else list(self.iter_rows())

    def to_bytes(self) -> bytes:
        """The message's JSON, with only the fields of the batch's form. By orjson: 2-3x cheaper than
        pydantic for rows of plain values, which pydantic writes as `Any`, one type check per value."""
        unused = _ROW_FIELDS if self.records is not None else _COLUMNAR_FIELDS
        try:
            return orjson.dumps({_JSON_NAMES[name]: getattr(self, name) for name in _JSON_NAMES if name not in unused},
                                option=orjson.OPT_UTC_Z)
        except TypeError:  # what orjson cannot write (an int over 64 bits, a lone surrogate, a non-str key)
            return self.model_dump_json(by_alias=True, exclude=unused).encode()


_JSON_NAMES = {name: field.alias or name for name, field in PredictionBatch.model_fields.items()}
_ROW_FIELDS = frozenset({"columns", "data"})
_COLUMNAR_FIELDS = frozenset({"records"})


def columnar_form(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]] | None:
    """`(columns, data)` for rows that all have the same features (the first row's order); None when they
    differ, which only the rows form can say."""
    if not rows:
        return None
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        return None
    columns = list(keys)
    return columns, [[row[c] for c in columns] for row in rows]


def row_of(doc: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Row `i` of a prediction batch already decoded from JSON (a dict, in either form) without validating
    the whole batch: for a reader that keeps messages as received and reads a few rows back."""
    if "rows" in doc:
        return doc["rows"][i]
    return dict(zip(doc["columns"], doc["data"][i], strict=True))


def parse_batch(raw: bytes | str) -> PredictionBatch:
    """Parse one prediction-log message, or raise `PredictionBatchError` naming the problem."""
    try:
        return PredictionBatch.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "batch"
        raise PredictionBatchError(f"invalid prediction batch at {where}: {first['msg']}") from None

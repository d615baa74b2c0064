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

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator


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


# --- The joiner's reader ----------------------------------------------------------------------------------------
# The outcomes joiner stores a batch as received and reads back only the rows that join, so it needs of each
# batch the fields that name and place its rows, not the feature cells. One msgspec decode into the structs
# below reads those and leaves every feature row and prediction as unread JSON (`msgspec.Raw`); the key column,
# when one is asked for, is the only feature read. The structs take a subset of what `PredictionBatch` takes in
# everything but the feature cells (strict types, no unknown field, the same one-form and count checks); what they
# refuse goes to `parse_batch`, for its result or its reason.


class BatchHead(NamedTuple):
    """What a reader that keeps the batch as received needs of it: who served it, when, and its rows' ids and
    count; `keys` is the asked-for key column's values in row order (None: no row has the column)."""

    model: str
    version: str | None
    role: str
    ts: datetime
    count: int
    ids: list[str] | None
    keys: list[Any] | None


_Raw = msgspec.Raw
_UNSET = msgspec.UNSET


class _Head(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    predictions: list[_Raw]
    version: str | None = None
    rows: list[dict[str, _Raw]] | msgspec.UnsetType | None = _UNSET
    columns: list[str] | msgspec.UnsetType | None = _UNSET
    data: list[_Raw] | msgspec.UnsetType | None = _UNSET
    ids: list[str] | None = None
    ts: _Raw | msgspec.UnsetType = _UNSET
    role: Literal["champion", "shadow"] = "champion"


_HEAD = msgspec.json.Decoder(_Head)
_keyed: dict[tuple[int, int], msgspec.json.Decoder[Any]] = {}


def _key_reader(j: int, width: int) -> msgspec.json.Decoder[Any]:
    """A decoder of `data` rows `width` long that reads cell `j` alone (the others left unread)."""
    decoder = _keyed.get((j, width))
    if decoder is None:
        cells = (_Raw,) * j + (Any,) + (_Raw,) * (width - j - 1)
        decoder = _keyed[(j, width)] = msgspec.json.Decoder(list[tuple[cells]])  # type: ignore[valid-type]
    return decoder


_ts = TypeAdapter(datetime).validate_json


def read_head(raw: bytes, key_column: Callable[[str], str | None] | None = None) -> BatchHead | None:
    """The head of the prediction batch `raw`, reading of its features only the column `key_column(model)` names
    (if any); None when the batch is not plainly one (then `parse_batch` says what it is). A batch malformed only
    in feature cells other than the key's (a cell `PredictionBatch` refuses, in the columnar form a row of the
    wrong width when no key is read) may have a head: say so to your readers."""
    try:
        head = _HEAD.decode(raw)
        key = key_column(head.model) if key_column is not None else None
        rows, columns, data = head.rows, head.columns, head.data
        if rows is not _UNSET and rows is not None:
            if columns is not _UNSET or data is not _UNSET:
                return None  # both forms, or a null where a form is not: `parse_batch` words it
            count = len(rows)
            keys = None
            if key is not None and any(key in row for row in rows):
                keys = [None if (cell := row.get(key)) is None else msgspec.json.decode(cell) for row in rows]
        elif columns is _UNSET or columns is None or data is _UNSET or data is None or rows is None:
            return None
        else:
            if len(set(columns)) != len(columns):
                return None
            keys = None
            if key is not None and key in columns:
                j = columns.index(key)
                rows_json = b"[" + b",".join(data) + b"]"  # one decode of every row, not one per row
                keys = [values[j] for values in _key_reader(j, len(columns)).decode(rows_json)]
            count = len(data)
        if len(head.predictions) != count or (head.ids is not None and len(head.ids) != count):
            return None
        ts = datetime.now(UTC) if head.ts is _UNSET else _ts(bytes(head.ts))
    except (msgspec.DecodeError, ValidationError):
        return None
    return BatchHead(head.model, head.version, head.role, ts, count, head.ids, keys)

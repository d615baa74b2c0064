"""What the outcome store takes and gives: served batches, labels, joined predictions, counts by state.

Plain records, apart from the store (`outcomes`) and its in-memory join (`join_index`) that both use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ctloop.metrics import label_key
from ctloop.predictions import BatchHead, PredictionBatch

CHAMPION = "champion"
SHADOW = "shadow"


@dataclass(frozen=True)
class JoinedPrediction:
    """A served prediction and the label observed for it. `prediction` is what serving returned for the row:
    a label or value, or a mapping of class to probability. `features` are the row's as served (of a row whose
    cells were malformed, which the joiner stores, the ones it has)."""

    prediction_id: str
    model: str
    version: str | None
    role: str
    features: dict[str, Any]
    prediction: Any
    label: Any
    served_at: datetime
    observed_at: datetime


@dataclass(frozen=True)
class ServedBatch:
    """One prediction batch as the store keeps it: `body` is the batch's JSON as served (its rows and
    predictions, read back only for joined rows); `ids[i]` and `entities[i]` (row i's key value, if any)
    name row i."""

    model: str
    version: str | None
    role: str
    served_at: datetime
    ids: Sequence[str]
    entities: Sequence[str | None]
    body: bytes

    @classmethod
    def of(cls, batch: PredictionBatch, *, key: str | None = None, ids: Sequence[str] | None = None,
           body: bytes | None = None) -> ServedBatch:
        """The store's view of `batch`: entities from its `key` column, `ids` unless the batch has its own,
        and `body` (default: the batch serialised) as received."""
        ids = batch.ids or ids
        if ids is None:
            raise ValueError("a served batch needs an id per row: the batch has none and none were given")
        values = batch.column(key) if key is not None else None
        return cls(batch.model, batch.version, batch.role or CHAMPION, _aware(batch.ts), ids,
                   _entities(values, batch.count), batch.to_bytes() if body is None else body)

    @classmethod
    def of_head(cls, head: BatchHead, *, ids: Sequence[str], body: bytes) -> ServedBatch:
        """`of` for a batch read by `read_head` (its key column read, if any): `ids` unless it has its own."""
        return cls(head.model, head.version, head.role, _aware(head.ts), head.ids or ids,
                   _entities(head.keys, head.count), body)


def _entities(values: Sequence[Any] | None, count: int) -> list[str | None]:
    """Each row's entity key as labels name it (`label_key`), or None per row when the batch has no key column."""
    return [None if v is None else label_key(v) for v in values] if values is not None else [None] * count


def _aware(ts: datetime) -> datetime:
    """A batch's serving time; a naive one is taken as UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class Label(NamedTuple):
    """One label event as the store keeps it (`label_id` is the event's id). A tuple: the joiner makes one per
    label, and a frozen dataclass costs five times as much to make."""

    label_id: str
    label: Any
    observed_at: datetime
    prediction_id: str | None = None
    model: str | None = None
    entity: str | None = None


@dataclass(frozen=True)
class JoinCounts:
    """What the store holds, by label state."""

    predictions: int
    joined: int
    pending: int
    late: int
    duplicate: int


def batch_key(ids: Sequence[str]) -> str | None:
    """The key of a batch whose ids are `<key>-0`, `<key>-1`, ... (serving's form), else None."""
    key, _, last = ids[-1].rpartition("-") if ids else ("", "", "")
    if not key or last != str(len(ids) - 1):
        return None
    prefix = key + "-"
    return key if [*ids] == [f"{prefix}{i}" for i in range(len(ids))] else None

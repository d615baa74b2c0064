"""Tumbling windows over the prediction log, accumulating column statistics batch by batch.

A window closes at the first batch boundary at or after `max_rows` rows, or when a batch stamped
`max_seconds` or more after the window's first batch arrives (event time), or when `close_due` finds
the window open for `max_seconds` of wall-clock time (an idle stream; event time cannot tell, and
replayed history would otherwise close every window at once). Batches
are never split, so every prediction-log message belongs to exactly one window and its offset can
be committed once that window's verdict is out.

Bad cells never stop the monitor: a missing feature, a NaN/None/infinite value or a value of the
wrong type is left out of its column (as Evidently drops NaN per column) and the row is counted
under each kind of problem it has; features the profile does not know are ignored and counted as
`extra`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

BAD_KINDS = ("missing", "extra", "nan", "wrong_type")
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    max_rows: int | None = 10_000
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_rows is None and self.max_seconds is None:
            raise ValueError("a window policy needs max_rows, max_seconds or both")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")


@dataclass(frozen=True, slots=True)
class Columns:
    """A batch's rows in the columnar form: the feature names once, and each row's values in that order.
    Folded column by column, with no dict per row; iterating it makes the rows as dicts (for reports)."""

    names: Sequence[str]
    data: Sequence[Sequence[Any]]

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (dict(zip(self.names, values, strict=True)) for values in self.data)


Rows = Sequence[dict[str, Any]] | Columns


@dataclass
class Window:
    """One window's rows, reduced to what the drift tests need."""

    numeric: Sequence[str]
    categorical: Sequence[str]
    start: datetime | None = None
    end: datetime | None = None
    rows: int = 0
    batches: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    keep_rows: bool = False
    opened_at: float | None = None
    markers: dict[Hashable, Any] = field(default_factory=dict)
    kept: list[Rows] = field(default_factory=list)
    _chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _counts: dict[str, Counter[Hashable]] = field(default_factory=dict)

    def add(self, rows: Rows, ts: datetime, marker: Any = None, stream: Hashable = None) -> None:
        """Fold one batch in, as rows or `Columns`. `marker` (e.g. the bus message) is remembered as the
        latest of its `stream` (e.g. topic and partition), so the window knows what to commit once it is done."""
        self.start = ts if self.start is None else min(self.start, ts)
        self.end = ts if self.end is None else max(self.end, ts)
        self.batches += 1
        self.mark(marker, stream)
        if not rows:
            return
        if self.keep_rows:
            self.kept.append(rows)
        if isinstance(rows, Columns):
            self._add_columns(rows)
            return
        n = len(rows)
        missing = np.zeros(n, dtype=bool)
        nan = np.zeros(n, dtype=bool)
        wrong = np.zeros(n, dtype=bool)
        known_present = np.zeros(n, dtype=np.int64)
        for name in self.numeric:
            values = [row.get(name, _ABSENT) for row in rows]
            finite, col_missing, col_nan, col_wrong = _numeric_cells(values)
            self._chunks.setdefault(name, []).append(finite)
            missing |= col_missing
            nan |= col_nan
            wrong |= col_wrong
            known_present += ~col_missing
        for name in self.categorical:
            values = [row.get(name, _ABSENT) for row in rows]
            counts, col_missing, col_nan, col_wrong = _categorical_cells(values)
            self._counts.setdefault(name, Counter()).update(counts)
            missing |= col_missing
            nan |= col_nan
            wrong |= col_wrong
            known_present += ~col_missing
        extra = np.fromiter((len(row) for row in rows), dtype=np.int64, count=n) > known_present
        self.rows += n
        for kind, flags in zip(BAD_KINDS, (missing, extra, nan, wrong), strict=True):
            self.bad[kind] += int(flags.sum())

    def _add_columns(self, table: Columns) -> None:
        """`add` for the columnar form: a row has every column, so a feature absent from the names is missing
        in every row, and every row is `extra` when the names hold a feature the profile does not know."""
        n = len(table)
        where = {name: j for j, name in enumerate(table.names)}
        by_column = list(zip(*table.data, strict=True))
        nowhere = np.ones(n, dtype=bool)
        flags = {kind: np.zeros(n, dtype=bool) for kind in BAD_KINDS}
        known = 0
        for name in self.numeric:
            j = where.get(name)
            if j is None:
                self._chunks.setdefault(name, []).append(np.empty(0))
                flags["missing"] |= nowhere
                continue
            known += 1
            finite, _, col_nan, col_wrong = _numeric_cells(by_column[j])
            self._chunks.setdefault(name, []).append(finite)
            flags["nan"] |= col_nan
            flags["wrong_type"] |= col_wrong
        for name in self.categorical:
            j = where.get(name)
            counts = self._counts.setdefault(name, Counter())
            if j is None:
                flags["missing"] |= nowhere
                continue
            known += 1
            found, _, col_nan, col_wrong = _categorical_cells(by_column[j])
            counts.update(found)
            flags["nan"] |= col_nan
            flags["wrong_type"] |= col_wrong
        if len(where) > known:
            flags["extra"] |= nowhere
        self.rows += n
        for kind in BAD_KINDS:
            self.bad[kind] += int(flags[kind].sum())

    def mark(self, marker: Any, stream: Hashable = None) -> None:
        if marker is not None:
            self.markers[stream] = marker

    def frame(self) -> pd.DataFrame:
        """The kept rows' known columns; unusable cells become missing values (needs `keep_rows`)."""
        rows = [row for batch in self.kept for row in batch]
        data = {name: pd.Series([_number_or_nan(r.get(name)) for r in rows], dtype="float64") for name in self.numeric}
        for name in self.categorical:
            data[name] = pd.Series([_category_or_none(r.get(name)) for r in rows], dtype="object")
        return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))

    def numeric_values(self, name: str) -> np.ndarray:
        chunks = self._chunks.get(name)
        return np.concatenate(chunks) if chunks else np.empty(0)

    def category_counts(self, name: str) -> Counter[Hashable]:
        return self._counts.get(name, Counter())

    def bad_rows(self) -> dict[str, int]:
        return {kind: self.bad[kind] for kind in BAD_KINDS}


class TumblingWindows:
    """Feeds batches into the open window and hands back the windows that close."""

    def __init__(
        self,
        policy: WindowPolicy,
        numeric: Sequence[str],
        categorical: Sequence[str],
        *,
        keep_rows: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._numeric = list(numeric)
        self._categorical = list(categorical)
        self._keep_rows = keep_rows
        self.current = self._new()

    def _new(self) -> Window:
        return Window(self._numeric, self._categorical, keep_rows=self._keep_rows)

    def add(self, rows: Rows, ts: datetime, marker: Any = None, stream: Hashable = None) -> list[Window]:
        closed = []
        start = self.current.start
        if self.policy.max_seconds is not None and start is not None and ts - start >= timedelta(
            seconds=self.policy.max_seconds
        ):
            closed.append(self._rotate())
        if self.current.opened_at is None:
            self.current.opened_at = self._clock()
        self.current.add(rows, ts, marker, stream)
        if self.policy.max_rows is not None and self.current.rows >= self.policy.max_rows:
            closed.append(self._rotate())
        return closed

    def close_due(self) -> Window | None:
        """Close the open window if it has been open `max_seconds` (wall clock) and no batch closed it."""
        seconds, opened = self.policy.max_seconds, self.current.opened_at
        if seconds is None or opened is None or self._clock() - opened < seconds:
            return None
        return self._rotate()

    def _rotate(self) -> Window:
        closed, self.current = self.current, self._new()
        return closed


def _numeric_cells(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(finite values, missing, nan, wrong type) of one numeric column of a batch."""
    n = len(values)
    types = set(map(type, values))
    if types <= {float, int}:
        arr = np.asarray(values, dtype="float64")
        ok = np.isfinite(arr)
        none = np.zeros(n, dtype=bool)
        return arr[ok], none, ~ok, none
    missing = np.zeros(n, dtype=bool)
    nan = np.zeros(n, dtype=bool)
    wrong = np.zeros(n, dtype=bool)
    numbers = np.full(n, math.nan)
    for i, v in enumerate(values):
        if v is _ABSENT:
            missing[i] = True
        elif v is None:
            nan[i] = True
        elif isinstance(v, bool) or not isinstance(v, int | float):
            wrong[i] = True
        else:
            numbers[i] = v
            nan[i] = not math.isfinite(v)
    return numbers[np.isfinite(numbers)], missing, nan, wrong


def _categorical_cells(values: Sequence[Any]) -> tuple[Counter[Hashable], np.ndarray, np.ndarray, np.ndarray]:
    """(category counts, missing, nan, wrong type) of one categorical column of a batch."""
    n = len(values)
    if set(map(type, values)) <= {str, int}:
        none = np.zeros(n, dtype=bool)
        return Counter(values), none, none, none
    missing = np.zeros(n, dtype=bool)
    nan = np.zeros(n, dtype=bool)
    wrong = np.zeros(n, dtype=bool)
    counts: Counter[Hashable] = Counter()
    for i, v in enumerate(values):
        if v is _ABSENT:
            missing[i] = True
        elif v is None or (isinstance(v, float) and not math.isfinite(v)):
            nan[i] = True
        elif isinstance(v, str | int | float):
            counts[v] += 1
        else:
            wrong[i] = True
    return counts, missing, nan, wrong


def _category_or_none(value: Any) -> Any:
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return None


def _number_or_nan(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

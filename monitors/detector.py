"""Per-window drift verdicts against a reference profile, by Evidently 0.7's default rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from ctloop.events import ColumnDrift
from ctloop.monitors.stattests import (
    CategoricalReference,
    DriftThresholds,
    NumericReference,
    categorical_drift,
    numeric_drift,
)
from ctloop.monitors.window import Window
from ctloop.profile import ReferenceProfile


@dataclass(frozen=True)
class WindowVerdict:
    start: datetime
    end: datetime
    rows: int
    columns: dict[str, ColumnDrift]
    untested: tuple[str, ...]
    drifted_share: float
    dataset_drift: bool
    bad_rows: dict[str, int] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.drifted]

    @property
    def any_drift(self) -> bool:
        return bool(self.drifted_columns)


class DriftDetector:
    """Holds the reference, prepared once; `detect` is pure and cheap per window."""

    def __init__(self, profile: ReferenceProfile, thresholds: DriftThresholds | None = None) -> None:
        self.profile = profile
        self.thresholds = thresholds or DriftThresholds()
        self._numeric = {name: NumericReference(p, self.thresholds) for name, p in profile.numeric.items()}
        self._categorical = {name: CategoricalReference(p) for name, p in profile.categorical.items()}

    @property
    def numeric(self) -> list[str]:
        return list(self._numeric)

    @property
    def categorical(self) -> list[str]:
        return list(self._categorical)

    def new_window(self) -> Window:
        return Window(self.numeric, self.categorical)

    def detect(self, window: Window) -> WindowVerdict:
        """Columns with no usable value on either side are untested, and left out of the share (where
        Evidently would refuse the whole report)."""
        results = dict(self._column_results(window))
        columns = {name: col for name, col in results.items() if col is not None}
        untested = tuple(name for name, col in results.items() if col is None)
        share = sum(col.drifted for col in columns.values()) / len(columns) if columns else 0.0
        now = datetime.now(UTC)
        return WindowVerdict(
            start=window.start or now,
            end=window.end or now,
            rows=window.rows,
            columns=columns,
            untested=untested,
            drifted_share=share,
            dataset_drift=bool(columns) and share >= self.thresholds.drift_share,
            bad_rows=window.bad_rows(),
        )

    def detect_frame(self, frame: pd.DataFrame, ts: datetime | None = None) -> WindowVerdict:
        """One window made of a whole frame (one-off checks, tests)."""
        window = self.new_window()
        rows = frame.to_dict(orient="records")
        window.add([{k: _plain(v) for k, v in row.items()} for row in rows], ts or datetime.now(UTC))
        return self.detect(window)

    def _column_results(self, window: Window) -> Iterator[tuple[str, ColumnDrift | None]]:
        for name, ref in self._numeric.items():
            yield name, numeric_drift(ref, window.numeric_values(name), self.thresholds)
        for name, cat in self._categorical.items():
            yield name, categorical_drift(cat, window.category_counts(name), self.thresholds)


def _plain(value: object) -> object:
    """numpy scalars as Python values; a pandas missing value as None."""
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    if value is pd.NA or value is pd.NaT:
        return None
    return value

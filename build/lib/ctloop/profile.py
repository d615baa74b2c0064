"""The reference profile: what the drift monitor needs from a model's training data, computed once.

The trainer builds it from the reference (training) frame and stores it as `reference_profile.json`
with the model's run; the monitor loads it and never touches the training data again.

Sampling and agreement with Evidently: at most `sample_rows` reference rows are kept (one random
row sample shared by all columns). Every statistic in the profile is computed from exactly those
rows, so the monitor's verdicts equal Evidently's when Evidently is given the kept rows
(`ReferenceProfile.to_frame()` rebuilds an equivalent frame). When the reference has more rows than
the cap, verdicts against the *full* reference may differ for windows near a threshold, because a
5000-row sample estimates the reference distribution with small error (KS and chi-square p-values,
normed Wasserstein and Jensen-Shannon distances all move slightly). Test selection (KS/chi-square
vs Wasserstein/Jensen-Shannon) follows Evidently's rule on a column's finite *kept* values (> 1000
or not), so with the default cap of 5000 a reference of more than 1000 rows gets the distance tests
either way; `rows` keeps the full count for the record.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

PROFILE_FORMAT = 1
# The artifact name under the training run: the trainer writes it, the monitor reads it.
PROFILE_ARTIFACT = "reference_profile.json"
QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 100 for i in range(101))
CategoryValue = bool | int | float | str


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericProfile(_Frozen):
    """A numeric column of the kept rows: its finite values sorted, and summaries of them."""

    values: tuple[float, ...]
    missing: int = Field(ge=0, description="NaN or infinite values among the kept rows (Evidently drops them)")
    mean: float | None
    std: float | None = Field(description="population std (ddof=0), as Evidently norms Wasserstein by")
    quantiles: tuple[float, ...] = Field(description="values at QUANTILE_LEVELS; empty when no finite value")

    @property
    def count(self) -> int:
        return len(self.values)


class CategoricalProfile(_Frozen):
    """A categorical column of the kept rows: each category and how often it occurs."""

    categories: tuple[CategoryValue, ...]
    counts: tuple[int, ...]
    missing: int = Field(ge=0)

    @model_validator(mode="after")
    def _aligned(self) -> CategoricalProfile:
        if len(self.categories) != len(self.counts):
            raise ValueError(f"categories ({len(self.categories)}) and counts ({len(self.counts)}) differ in length")
        return self

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def frequencies(self) -> dict[CategoryValue, int]:
        return dict(zip(self.categories, self.counts, strict=True))


class ReferenceProfile(_Frozen):
    format: int = PROFILE_FORMAT
    rows: int = Field(ge=0, description="rows of the full reference frame")
    kept_rows: int = Field(ge=0, description="rows kept in the sample all statistics come from")
    seed: int = 0
    numeric: dict[str, NumericProfile] = Field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceProfile:
        if self.format != PROFILE_FORMAT:
            raise ValueError(f"unsupported reference profile format {self.format} (expected {PROFILE_FORMAT})")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        for name, col in [*self.numeric.items(), *self.categorical.items()]:
            if col.count + col.missing != self.kept_rows:
                raise ValueError(f"column {name!r} has {col.count + col.missing} values, expected {self.kept_rows}")
        return self

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_json(self) -> str:
        return self.model_dump_json()

    def to_frame(self) -> pd.DataFrame:
        """A frame equivalent to the kept rows for every per-column drift test (row order is not kept)."""
        data: dict[str, pd.Series] = {}
        for name, num in self.numeric.items():
            data[name] = pd.Series([*num.values, *([math.nan] * num.missing)], dtype="float64")
        for name, cat in self.categorical.items():
            repeated = [value for value, n in zip(cat.categories, cat.counts, strict=True) for _ in range(n)]
            data[name] = pd.Series([*repeated, *([None] * cat.missing)], dtype="object")
        return pd.DataFrame(data, index=pd.RangeIndex(self.kept_rows))


def load_profile(json_text: str | bytes) -> ReferenceProfile:
    return ReferenceProfile.model_validate_json(json_text)


def build_profile(
    frame: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    sample_rows: int = 5000,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile `frame`'s named columns from a random sample of at most `sample_rows` rows."""
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be at least 1, got {sample_rows}")
    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise ValueError(f"reference frame lacks columns {missing} (has {list(frame.columns)})")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ValueError(f"columns listed as both numeric and categorical: {both}")
    kept = frame.sample(n=sample_rows, random_state=seed) if len(frame) > sample_rows else frame
    return ReferenceProfile(
        rows=len(frame),
        kept_rows=len(kept),
        seed=seed,
        numeric={name: _numeric(name, kept[name]) for name in numeric},
        categorical={name: _categorical(kept[name]) for name in categorical},
    )


def _numeric(name: str, column: pd.Series) -> NumericProfile:
    if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
        raise ValueError(f"numeric column {name!r} has non-numeric dtype {column.dtype}")
    raw = column.to_numpy(dtype="float64", na_value=np.nan)
    finite = np.sort(raw[np.isfinite(raw)])
    if finite.size == 0:
        return NumericProfile(values=(), missing=len(raw), mean=None, std=None, quantiles=())
    return NumericProfile(
        values=tuple(finite.tolist()),
        missing=int(len(raw) - finite.size),
        mean=float(finite.mean()),
        std=float(finite.std()),
        quantiles=tuple(np.quantile(finite, QUANTILE_LEVELS).tolist()),
    )


def _categorical(column: pd.Series) -> CategoricalProfile:
    # Evidently treats infinities as missing in every column, categorical ones too.
    column = column.replace([np.inf, -np.inf], np.nan)
    counts = column.value_counts(dropna=True)
    return CategoricalProfile(
        categories=tuple(_plain(v) for v in counts.index),
        counts=tuple(int(n) for n in counts.to_numpy()),
        missing=int(column.isna().sum()),
    )


def _plain(value: object) -> CategoryValue:
    """numpy scalars become the Python value JSON can carry."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"category {value!r} of type {type(value).__name__} is not a bool, int, float or string")
    return value

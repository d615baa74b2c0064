"""Evidently 0.7's default per-column drift tests, reimplemented against a precomputed reference.

The rules are those of `evidently.legacy.calculations.stattests.registry._get_default_stattest`,
applied after Evidently's cleaning (NaN and +-inf dropped per column):

| reference values (finite) | column kind | values in ref + current | test            | drift when         |
|---------------------------|-------------|-------------------------|-----------------|--------------------|
| <= 1000                   | numeric     | > 5                     | two-sample KS   | p <= 0.05          |
| <= 1000                   | numeric     | 3..5                    | chi-square      | p < 0.05           |
| <= 1000                   | any         | <= 2                    | proportions z   | p < 0.05           |
| <= 1000                   | categorical | > 2                     | chi-square      | p < 0.05           |
| > 1000                    | numeric     | > 5                     | Wasserstein / std(ref) | distance >= 0.1 |
| > 1000                    | numeric     | <= 5                    | Jensen-Shannon  | distance >= 0.1    |
| > 1000                    | categorical | any                     | Jensen-Shannon  | distance >= 0.1    |

Jensen-Shannon runs on category frequencies over the union of values (no zero filling, natural
log), as Evidently does for any column whose reference has at most 20 distinct values; chi-square
expects the reference frequencies scaled to the current size, so a category the reference never
saw gives p = 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial import distance

from ctloop.events import ColumnDrift
from ctloop.profile import CategoricalProfile, NumericProfile


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """Every knob of the default rules; the defaults are Evidently 0.7's."""

    ks_pvalue: float = 0.05
    chisquare_pvalue: float = 0.05
    z_pvalue: float = 0.05
    wasserstein: float = 0.1
    jensenshannon: float = 0.1
    large_reference: int = 1000
    few_values: int = 5
    drift_share: float = 0.5
    # Wasserstein is normed by max(std(reference), wasserstein_min_norm), as Evidently does.
    wasserstein_min_norm: float = 0.001


class NumericReference:
    """A numeric reference column, sorted once, with its distinct values when there are few."""

    def __init__(self, profile: NumericProfile, thresholds: DriftThresholds) -> None:
        self.values = np.asarray(profile.values, dtype="float64")
        self.size = self.values.size
        self.norm = max(float(profile.std or 0.0), thresholds.wasserstein_min_norm)
        distinct, counts = np.unique(self.values, return_counts=True)
        few = distinct.size <= thresholds.few_values
        self.few_counts: dict[Hashable, int] | None = (
            dict(zip(distinct.tolist(), counts.tolist(), strict=True)) if few else None
        )


class CategoricalReference:
    def __init__(self, profile: CategoricalProfile) -> None:
        self.counts: dict[Hashable, int] = dict(Counter(profile.frequencies))
        self.size = sum(self.counts.values())


def numeric_drift(ref: NumericReference, current: np.ndarray, t: DriftThresholds) -> ColumnDrift | None:
    """Drift of a numeric column; `current` holds its finite values. None when either side is empty."""
    if ref.size == 0 or current.size == 0:
        return None
    if ref.few_counts is not None:
        cur_distinct, cur_counts = np.unique(current, return_counts=True)
        union = set(ref.few_counts) | set(cur_distinct.tolist())
        if len(union) <= t.few_values:
            cur = dict(zip(cur_distinct.tolist(), cur_counts.tolist(), strict=True))
            return _discrete_drift(ref.few_counts, ref.size, cur, current.size, t)
    if ref.size > t.large_reference:
        score = wasserstein_sorted(ref.values, np.sort(current)) / ref.norm
        return ColumnDrift(stattest="wasserstein", score=score, threshold=t.wasserstein, drifted=score >= t.wasserstein)
    p = float(stats.ks_2samp(ref.values, current).pvalue)
    return ColumnDrift(stattest="ks", score=p, threshold=t.ks_pvalue, drifted=p <= t.ks_pvalue)


def categorical_drift(
    ref: CategoricalReference, current: Mapping[Hashable, int], t: DriftThresholds
) -> ColumnDrift | None:
    """Drift of a categorical column from its category counts. None when either side is empty."""
    size = sum(current.values())
    if ref.size == 0 or size == 0:
        return None
    return _discrete_drift(ref.counts, ref.size, current, size, t)


def _discrete_drift(
    ref: Mapping[Hashable, int],
    ref_size: int,
    cur: Mapping[Hashable, int],
    cur_size: int,
    t: DriftThresholds,
) -> ColumnDrift:
    keys = list(set(ref) | set(cur))
    ref_counts = np.array([ref.get(k, 0) for k in keys], dtype="float64")
    cur_counts = np.array([cur.get(k, 0) for k in keys], dtype="float64")
    if ref_size > t.large_reference:
        score = float(distance.jensenshannon(ref_counts / ref_size, cur_counts / cur_size))
        return ColumnDrift(
            stattest="jensenshannon", score=score, threshold=t.jensenshannon, drifted=score >= t.jensenshannon
        )
    if len(keys) > 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = float(stats.chisquare(cur_counts, ref_counts * (cur_size / ref_size)).pvalue)
        return ColumnDrift(stattest="chisquare", score=p, threshold=t.chisquare_pvalue, drifted=p < t.chisquare_pvalue)
    p = _z_pvalue(ref, ref_size, cur, cur_size)
    return ColumnDrift(stattest="z", score=p, threshold=t.z_pvalue, drifted=p < t.z_pvalue)


def _z_pvalue(ref: Mapping[Hashable, int], ref_size: int, cur: Mapping[Hashable, int], cur_size: int) -> float:
    """Evidently's two-proportion z-test: the share of values other than the smallest key."""
    ref_keys = [k for k, n in ref.items() if n]
    cur_keys = [k for k, n in cur.items() if n]
    if len(ref_keys) == 1 and len(cur_keys) == 1 and ref_keys[0] == cur_keys[0]:
        return 1.0
    first = _sorted_keys(set(ref_keys) | set(cur_keys))[0]
    p1 = (ref_size - ref.get(first, 0)) / ref_size
    p2 = (cur_size - cur.get(first, 0)) / cur_size
    pooled = (p1 * ref_size + p2 * cur_size) / (ref_size + cur_size)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / ref_size + 1 / cur_size))
    if spread == 0:
        return math.nan
    return float(2 * (1 - stats.norm.cdf(abs((p1 - p2) / spread))))


def _sorted_keys(keys: set[Hashable]) -> list[Hashable]:
    try:
        return sorted(keys)  # type: ignore[type-var]
    except TypeError:
        # Evidently fails on mixed-type categories; the monitor orders them by type name instead.
        return sorted(keys, key=lambda k: (type(k).__name__, str(k)))


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples: scipy's CDF integral without its argsorts."""
    merged = np.sort(np.concatenate((u, v)), kind="mergesort")
    deltas = np.diff(merged)
    u_cdf = np.searchsorted(u, merged[:-1], side="right") / u.size
    v_cdf = np.searchsorted(v, merged[:-1], side="right") / v.size
    return float(np.sum(np.abs(u_cdf - v_cdf) * deltas))

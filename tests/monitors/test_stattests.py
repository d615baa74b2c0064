import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from ctloop.monitors.stattests import (
    CategoricalReference,
    DriftThresholds,
    NumericReference,
    categorical_drift,
    numeric_drift,
    wasserstein_sorted,
)
from ctloop.profile import CategoricalProfile, NumericProfile

T = DriftThresholds()


def _num(values) -> NumericReference:
    arr = np.sort(np.asarray(values, dtype=float))
    profile = NumericProfile(values=tuple(arr), missing=0, mean=float(arr.mean()), std=float(arr.std()), quantiles=())
    return NumericReference(profile, T)


def _cat(counts: dict) -> CategoricalReference:
    return CategoricalReference(CategoricalProfile(categories=tuple(counts), counts=tuple(counts.values()), missing=0))


def test_wasserstein_of_sorted_samples_equals_scipys():
    rng = np.random.default_rng(0)
    u, v = np.sort(rng.normal(0, 1, 3000)), np.sort(rng.normal(0.3, 2, 700))
    assert wasserstein_sorted(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)


def test_large_numeric_reference_uses_normed_wasserstein_at_point_one():
    rng = np.random.default_rng(1)
    ref = _num(rng.normal(0, 2, 1500))
    cur = rng.normal(0.6, 2, 500)
    shifted = numeric_drift(ref, cur, T)
    assert shifted.stattest == "wasserstein" and shifted.threshold == 0.1 and shifted.drifted
    assert shifted.score == pytest.approx(stats.wasserstein_distance(ref.values, cur) / np.std(ref.values))
    assert not numeric_drift(ref, rng.normal(0, 2, 500), T).drifted


def test_small_numeric_reference_uses_ks_and_p_equal_to_threshold_counts_as_drift():
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(0, 1, 1000), rng.normal(0, 1, 200)
    result = numeric_drift(_num(ref), cur, T)
    assert result.stattest == "ks"
    assert result.score == pytest.approx(stats.ks_2samp(ref, cur).pvalue)
    at_p = DriftThresholds(ks_pvalue=result.score)
    assert numeric_drift(_num(ref), cur, at_p).drifted


def test_numeric_column_with_five_values_or_fewer_is_tested_as_categorical():
    ref = _num([0, 1, 2, 3] * 100)
    result = numeric_drift(ref, np.array([0.0, 1, 2, 3, 4] * 20), T)
    assert result.stattest == "chisquare"
    six_values = numeric_drift(ref, np.array([0.0, 1, 2, 3, 4, 5] * 20), T)
    assert six_values.stattest == "ks"
    large = _num([0, 1, 2] * 500)
    assert numeric_drift(large, np.array([0.0, 1, 2] * 50), T).stattest == "jensenshannon"


def test_category_the_reference_never_saw_makes_chisquare_p_zero():
    result = categorical_drift(_cat({"a": 50, "b": 30, "c": 20}), {"a": 5, "b": 3, "c": 2, "new": 1}, T)
    assert result.stattest == "chisquare"
    assert result.score == 0.0 and result.drifted


def test_two_categories_use_the_proportions_z_test():
    same = categorical_drift(_cat({"yes": 300}), {"yes": 40}, T)
    assert (same.stattest, same.score, same.drifted) == ("z", 1.0, False)
    moved = categorical_drift(_cat({"yes": 300, "no": 300}), {"yes": 90, "no": 10}, T)
    assert moved.stattest == "z" and moved.drifted


def test_large_categorical_reference_uses_jensen_shannon_on_frequencies():
    ref = {"a": 600, "b": 400, "c": 200}
    cur = {"a": 10, "b": 30, "d": 5}
    result = categorical_drift(_cat(ref), cur, T)
    keys = ["a", "b", "c", "d"]
    p = np.array([ref.get(k, 0) / 1200 for k in keys])
    q = np.array([cur.get(k, 0) / 45 for k in keys])
    assert result.stattest == "jensenshannon"
    assert result.score == pytest.approx(distance.jensenshannon(p, q))
    assert result.drifted


def test_empty_sides_are_not_tested():
    assert numeric_drift(_num([1.0, 2.0]), np.empty(0), T) is None
    assert categorical_drift(_cat({"a": 1}), {}, T) is None


def test_mixed_type_categories_do_not_crash_the_z_test():
    result = categorical_drift(_cat({1: 100}), {"1": 100}, T)
    assert result.stattest == "z" and not math.isnan(result.score)

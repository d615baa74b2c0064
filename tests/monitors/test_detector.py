from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ctloop.monitors.detector import DriftDetector
from ctloop.monitors.stattests import DriftThresholds
from ctloop.profile import build_profile

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _profile(n: int = 2000):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "a": rng.normal(0, 1, n), "b": rng.normal(5, 2, n), "c": rng.choice(["p", "q", "r"], n),
    })
    return build_profile(frame, numeric=["a", "b"], categorical=["c"])


def test_dataset_drifts_when_half_the_columns_drift():
    detector = DriftDetector(_profile())
    rng = np.random.default_rng(1)
    current = pd.DataFrame({"a": rng.normal(2, 1, 300), "b": rng.normal(5, 2, 300), "c": rng.choice(["p", "q"], 300)})
    verdict = detector.detect_frame(current, ts=T0)
    assert verdict.drifted_columns == ["a", "c"]
    assert verdict.drifted_share == 2 / 3 and verdict.dataset_drift
    assert (verdict.start, verdict.end, verdict.rows) == (T0, T0, 300)


def test_thresholds_are_configurable():
    rng = np.random.default_rng(2)
    current = pd.DataFrame(
        {"a": rng.normal(2, 1, 300), "b": rng.normal(5, 2, 300), "c": rng.choice(["p", "q", "r"], 300)}
    )
    strict = DriftDetector(_profile(), DriftThresholds(drift_share=0.3)).detect_frame(current)
    lenient = DriftDetector(_profile(), DriftThresholds(wasserstein=5.0)).detect_frame(current)
    assert strict.dataset_drift and strict.drifted_columns == ["a"]
    assert not lenient.any_drift


def test_a_window_of_garbage_is_reported_not_raised():
    detector = DriftDetector(_profile())
    window = detector.new_window()
    window.add([{"a": "x", "b": None}, {"zzz": 1}, {"a": [1]}], T0)
    verdict = detector.detect(window)
    assert verdict.columns == {} and set(verdict.untested) == {"a", "b", "c"}
    assert not verdict.dataset_drift and verdict.drifted_share == 0.0
    assert verdict.bad_rows == {"missing": 3, "extra": 1, "nan": 1, "wrong_type": 2}


def test_column_empty_in_the_window_is_untested_and_left_out_of_the_share():
    detector = DriftDetector(_profile())
    rng = np.random.default_rng(3)
    current = pd.DataFrame({"a": rng.normal(3, 1, 200), "c": rng.choice(["p", "q", "r"], 200)})
    verdict = detector.detect_frame(current)
    assert verdict.untested == ("b",)
    assert verdict.drifted_share == 0.5 and verdict.dataset_drift
    assert verdict.bad_rows["missing"] == 200

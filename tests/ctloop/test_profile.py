import math

import numpy as np
import pandas as pd
import pytest

from ctloop.profile import QUANTILE_LEVELS, ReferenceProfile, build_profile, load_profile


def _frame(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 2.0, n)
    x[:3] = [np.nan, np.inf, -np.inf]
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[5] = None
    return pd.DataFrame({"x": x, "colour": colour, "level": rng.integers(0, 4, n)})


def test_profile_round_trips_through_json():
    profile = build_profile(_frame(), numeric=["x"], categorical=["colour", "level"])
    again = load_profile(profile.to_json())
    assert again == profile
    assert isinstance(again.categorical["level"].categories[0], int)


def test_numeric_column_keeps_sorted_finite_values_and_counts_the_rest_missing():
    frame = _frame()
    num = build_profile(frame, numeric=["x"], categorical=[]).numeric["x"]
    finite = np.sort(frame["x"][np.isfinite(frame["x"])].to_numpy())
    assert num.values == tuple(finite)
    assert num.missing == 3
    assert num.std == pytest.approx(float(np.std(finite)))
    assert len(num.quantiles) == len(QUANTILE_LEVELS)
    assert num.quantiles[0] == finite[0] and num.quantiles[-1] == finite[-1]


def test_categorical_column_holds_frequencies_without_missing_values():
    cat = build_profile(_frame(), numeric=[], categorical=["colour"]).categorical["colour"]
    assert set(cat.frequencies) == {"red", "green", "blue"}
    assert cat.count == 299 and cat.missing == 1


def test_sample_cap_keeps_one_row_sample_for_all_columns():
    frame = _frame(n=2000)
    profile = build_profile(frame, numeric=["x"], categorical=["colour"], sample_rows=500, seed=3)
    assert (profile.rows, profile.kept_rows) == (2000, 500)
    kept = frame.sample(n=500, random_state=3)
    assert profile.numeric["x"].count == int(np.isfinite(kept["x"]).sum())
    assert profile.categorical["colour"].frequencies == kept["colour"].value_counts().to_dict()


def test_to_frame_rebuilds_the_kept_values_per_column():
    profile = build_profile(_frame(), numeric=["x"], categorical=["colour"])
    rebuilt = profile.to_frame()
    assert len(rebuilt) == profile.kept_rows
    assert rebuilt["x"].isna().sum() == 3
    assert sorted(rebuilt["x"].dropna()) == list(profile.numeric["x"].values)
    assert rebuilt["colour"].value_counts().to_dict() == profile.categorical["colour"].frequencies
    assert math.isnan(build_profile(pd.DataFrame({"y": [np.nan]}), numeric=["y"], categorical=[]).to_frame()["y"][0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numeric": ["nope"], "categorical": []}, "lacks columns"),
        ({"numeric": ["colour"], "categorical": []}, "non-numeric dtype"),
        ({"numeric": ["x"], "categorical": ["x"]}, "both numeric and categorical"),
        ({"numeric": ["x"], "categorical": [], "sample_rows": 0}, "sample_rows"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_profile(_frame(), **kwargs)


def test_inconsistent_profile_json_is_rejected():
    profile = build_profile(_frame(), numeric=["x"], categorical=[])
    doc = profile.model_dump(mode="json")
    doc["kept_rows"] = 10
    with pytest.raises(ValueError, match="expected 10"):
        ReferenceProfile.model_validate(doc)

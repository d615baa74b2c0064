"""The fast path agrees with Evidently 0.7's DataDriftPreset on the same reference and window."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from ctloop.monitors.detector import DriftDetector
from ctloop.profile import build_profile
from tests.monitors.evidently_oracle import evidently_verdict

NUMERIC = ["x", "y", "level"]
CATEGORICAL = ["colour", "flag"]
COLOURS = ["red", "green", "blue", "amber"]


@dataclass(frozen=True)
class Case:
    reference_rows: int
    scenario: str
    seed: int


def _frame(rng: np.random.Generator, n: int, *, mean: float = 0.0, scale: float = 1.0,
           colours: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), flag: float = 0.3, level_max: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "x": rng.normal(mean, scale, n),
        "y": rng.exponential(2.0, n) * scale + mean,
        "level": rng.integers(0, level_max + 1, n),
        "colour": rng.choice(COLOURS, n, p=colours),
        "flag": np.where(rng.random(n) < flag, "yes", "no"),
    })


def _window(case: Case, rng: np.random.Generator) -> pd.DataFrame:
    n = int(rng.integers(150, 400))
    strength = rng.uniform(0.05, 0.6)  # from barely there to obvious, so verdicts near the thresholds occur
    match case.scenario:
        case "none":
            frame = _frame(rng, n)
        case "mean_shift":
            frame = _frame(rng, n, mean=strength)
        case "variance":
            frame = _frame(rng, n, scale=1.0 + strength)
        case "category_shift":
            frame = _frame(rng, n, colours=(0.4 - strength / 2, 0.3, 0.2, 0.1 + strength / 2), flag=0.3 + strength / 3)
        case "mixed":
            frame = _frame(rng, n, mean=strength, colours=(0.25, 0.25, 0.25, 0.25), level_max=4)
    frame.loc[frame.sample(frac=0.02, random_state=case.seed).index, "x"] = np.nan
    return frame


SCENARIOS = ("none", "mean_shift", "variance", "category_shift", "mixed")
CASES = [
    Case(rows, scenario, seed)
    for rows in (600, 2500)
    for scenario in SCENARIOS
    for seed in range(6)
]


def test_verdicts_agree_with_evidently_on_at_least_99_percent():
    column_total = column_agree = dataset_total = dataset_agree = drifted = 0
    disagreements = []
    for case in CASES:
        rng = np.random.default_rng([case.reference_rows, SCENARIOS.index(case.scenario), case.seed])
        reference = _frame(rng, case.reference_rows)
        # The large references keep a 2000-row sample, so the cap is exercised too.
        profile = build_profile(reference, numeric=NUMERIC, categorical=CATEGORICAL, sample_rows=2000)
        current = _window(case, rng)
        ours = DriftDetector(profile).detect_frame(current)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = evidently_verdict(profile.to_frame(), current, NUMERIC, CATEGORICAL)
        for name, (method, score, drifted_here) in theirs.columns.items():
            column_total += 1
            drifted += drifted_here
            mine = ours.columns[name]
            if mine.drifted == drifted_here:
                column_agree += 1
            else:
                disagreements.append(f"{case} {name}: ours {mine.stattest}={mine.score:.6g} {mine.drifted}, "
                                     f"evidently {method}={score:.6g} {drifted_here}")
        dataset_total += 1
        if ours.dataset_drift == theirs.dataset_drift:
            dataset_agree += 1
        else:
            disagreements.append(f"{case} dataset: ours {ours.drifted_share:.3f}, evidently {theirs.dataset_drift}")
    print(f"columns {column_agree}/{column_total}, datasets {dataset_agree}/{dataset_total}, drifted {drifted}")
    for line in disagreements:
        print("DISAGREE", line)
    assert column_total == len(CASES) * (len(NUMERIC) + len(CATEGORICAL))
    assert 0.1 < drifted / column_total < 0.9, "the cases should mix drifted and clean columns"
    assert column_agree / column_total >= 0.99
    assert dataset_agree / dataset_total >= 0.99


@pytest.mark.parametrize("scenario", ["mean_shift", "category_shift"])
def test_generated_scenarios_do_drift(scenario):
    """Guards the agreement test against agreeing only on 'no drift'."""
    rng = np.random.default_rng(7)
    profile = build_profile(_frame(rng, 2500), numeric=NUMERIC, categorical=CATEGORICAL)
    verdict = DriftDetector(profile).detect_frame(_window(Case(2500, scenario, 7), np.random.default_rng(3)))
    assert verdict.any_drift

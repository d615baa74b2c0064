"""Holdout metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctloop.trainer.metrics import classification_metrics, regression_metrics, score


def test_classification_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    got = classification_metrics(y, proba)
    assert got["accuracy"] == 0.75
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 2, fp 1, fn 0 -> 4/5
    assert got["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))


def test_a_label_the_model_never_saw_counts_as_wrong() -> None:
    got = score("multiclass", ("a", "b"), pd.Series(["a", "c"]), np.array([[1.0, 0.0], [0.5, 0.5]]))
    assert got["accuracy"] == 0.5 and math.isfinite(got["log_loss"])


def test_labels_match_classes_across_spellings() -> None:
    got = score("binary", ("0", "1"), pd.Series([0.0, 1.0]), np.array([[0.8, 0.2], [0.1, 0.9]]))
    assert got["accuracy"] == 1.0


def test_regression_metrics() -> None:
    got = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert got == pytest.approx({"rmse": math.sqrt(4 / 3), "mae": 2 / 3, "r2": 1 - 4 / 2})


def test_an_empty_holdout_cannot_be_scored() -> None:
    with pytest.raises(ValueError, match="empty holdout"):
        regression_metrics(np.array([]), np.array([]))

"""Holdout metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctloop.trainer.metrics import classification_metrics, regression_metrics, score


def test_classification_metrics() -> None:
    y = np.array(["0", "0", "1", "1"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    pred = np.array(["0", "1", "1", "1"], dtype=object)
    got = classification_metrics(y, pred, ("0", "1"), proba)
    assert got["accuracy"] == 0.75
    assert got["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 2, fp 1, fn 0 -> 4/5
    assert got["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert got["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert got["recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))
    # positives score 0.8 and 0.7 and negatives 0.1 and 0.6: every positive ranks above every negative
    assert got["roc_auc"] == 1.0 and got["pr_auc"] == 1.0


def test_without_probabilities_only_label_metrics_are_given() -> None:
    got = classification_metrics(np.array(["a", "b"], dtype=object), np.array(["a", "a"], dtype=object), ("a", "b"))
    assert set(got) == {"accuracy", "balanced_accuracy", "f1", "precision", "recall"}


def test_an_auc_over_a_holdout_of_one_class_is_left_out() -> None:
    got = classification_metrics(np.array(["1", "1"], dtype=object), np.array(["1", "0"], dtype=object),
                                 ("0", "1"), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert "roc_auc" not in got and "pr_auc" not in got and math.isfinite(got["log_loss"])


def test_a_label_the_model_never_saw_counts_as_wrong() -> None:
    proba = np.array([[1.0, 0.0], [0.5, 0.5]])
    got = score("multiclass", ("a", "b"), pd.Series(["a", "c"]), np.array(["a", "a"]), proba)
    assert got["accuracy"] == 0.5 and math.isfinite(got["log_loss"])


def test_labels_match_classes_across_spellings() -> None:
    got = score("binary", ("0", "1"), pd.Series([0.0, 1.0]), np.array([0, 1]), np.array([[0.8, 0.2], [0.1, 0.9]]))
    assert got["accuracy"] == 1.0


def test_user_metrics_are_scored_beside_the_built_in_ones() -> None:
    def errors(y_true: pd.Series, y_pred: np.ndarray) -> float:
        return float(sum(str(a) != str(b) for a, b in zip(y_true, y_pred, strict=True)))

    got = score("binary", ("0", "1"), pd.Series([0, 1, 1]), np.array([0, 0, 1]), extra={"errors": errors})
    assert got["errors"] == 1.0 and got["accuracy"] == pytest.approx(2 / 3)


def test_regression_metrics() -> None:
    got = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 6.0]))
    ss_tot = sum((v - 7 / 3) ** 2 for v in (1.0, 2.0, 4.0))
    assert got == pytest.approx({"rmse": math.sqrt(4 / 3), "mae": 2 / 3, "r2": 1 - 4 / ss_tot, "mape": (2 / 4) / 3})


def test_an_empty_holdout_cannot_be_scored() -> None:
    with pytest.raises(ValueError, match="empty holdout"):
        regression_metrics(np.array([]), np.array([]))

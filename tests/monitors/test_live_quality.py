"""Live quality: the promotion policy's metrics on joined predictions, equal to scikit-learn's on the same rows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn import metrics as sk

from ctloop.monitors.live_quality import live_quality
from ctloop.monitors.outcome_records import CHAMPION, JoinedPrediction

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _rows(labels, predictions) -> list[JoinedPrediction]:
    return [JoinedPrediction(f"p{i}", "churn", "1", CHAMPION, {}, p, y, T0, T0) for i, (y, p) in
            enumerate(zip(labels, predictions, strict=True))]


def test_live_quality_of_probabilities_equals_scikit_learn_on_the_same_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(y * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    rows = _rows(y.tolist(), [{"0": 1 - p, "1": p} for p in p1])
    live = live_quality(rows, ["accuracy", "roc_auc", "log_loss", "f1", "pr_auc"])
    assert live.n == 400
    assert live.metrics["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p1))
    assert live.metrics["accuracy"] == pytest.approx(sk.accuracy_score(y, (p1 > 0.5).astype(int)))
    assert live.metrics["log_loss"] == pytest.approx(sk.log_loss(y, np.c_[1 - p1, p1]))
    assert live.metrics["f1"] == pytest.approx(sk.f1_score(y, (p1 > 0.5).astype(int), average="macro"))
    assert live.metrics["pr_auc"] == pytest.approx(sk.average_precision_score(y, p1))


def test_live_quality_of_predicted_labels_and_of_values():
    y, pred = [1, 0, 1, 1, 0, "1"], [1, 0, 0, 1, 1, 1.0]
    live = live_quality(_rows(y, pred), ["accuracy", "balanced_accuracy", "roc_auc"])
    assert live.metrics == {"accuracy": pytest.approx(4 / 6),
                            "balanced_accuracy": pytest.approx(sk.balanced_accuracy_score(
                                [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]))}  # no probabilities: no roc_auc
    values = _rows([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
    assert live_quality(values, ["rmse", "mae"]).metrics == {
        "rmse": pytest.approx(np.sqrt((0.25 + 0 + 1) / 3)), "mae": pytest.approx(0.5)}
    assert live_quality([], ["accuracy"]).n == 0


def test_an_auc_over_one_class_is_absent_not_nan():
    live = live_quality(_rows([1, 1], [{"0": 0.2, "1": 0.8}, {"0": 0.6, "1": 0.4}]), ["roc_auc", "accuracy"])
    assert live.metrics == {"accuracy": 0.5}

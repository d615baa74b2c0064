"""Holdout metrics: `score` a model's outputs by the core's metric functions (`ctloop.metrics`), plus the spec's own.

Classification: accuracy, balanced_accuracy, and macro f1, precision, recall from the predicted labels;
roc_auc, pr_auc (average precision) and log_loss when the model also gives class probabilities.
Regression: rmse, mae, r2, mape. A metric the holdout cannot define (an AUC over one class) is left out,
and a policy that needs it then rejects with that reason rather than comparing a NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from ctloop.metrics import classification_metrics, label_keys, probability_metrics, regression_metrics

UserMetric = Callable[[pd.Series, np.ndarray], float]


def score(
    task: str,
    classes: tuple[str, ...],
    labels: pd.Series,
    predictions: np.ndarray,
    proba: np.ndarray | None = None,
    *,
    extra: Mapping[str, UserMetric] | None = None,
) -> dict[str, float]:
    """Metrics of predicted labels (or values) and, optionally, probabilities [n, classes] against true labels."""
    if len(labels) == 0:
        raise ValueError("cannot score an empty holdout")
    if task == "regression":
        result = regression_metrics(labels.to_numpy(dtype=np.float64), np.asarray(predictions, dtype=np.float64))
    else:
        result = classification_metrics(
            label_keys(labels).to_numpy(dtype=object),
            label_keys(pd.Series(np.asarray(predictions, dtype=object))).to_numpy(dtype=object),
            classes, proba,
        )
    for name, fn in (extra or {}).items():
        result[name] = float(fn(labels, np.asarray(predictions)))
    return result


__all__ = ["classification_metrics", "probability_metrics", "regression_metrics", "score"]

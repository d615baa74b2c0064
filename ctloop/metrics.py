"""Quality metrics from scikit-learn, by the lowercase names a promotion policy and a quality rule use (the lists
are ctloop.modelspec's *_METRICS): the trainer scores a holdout with them, the outcomes monitor live traffic.

Classification: accuracy, balanced_accuracy, and macro f1, precision, recall from the predicted labels;
roc_auc, pr_auc (average precision) and log_loss when class probabilities are known.
Regression: rmse, mae, r2, mape. A metric the rows cannot define (an AUC over one class) is left out,
so that a rule needing it says so rather than comparing a NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as sk

_EPS = 1e-15


def label_key(value: object) -> str:
    """One spelling per label value, so 1, 1.0 and "1" from CSV, parquet, JSON or a spec are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label_keys(labels: pd.Series) -> pd.Series:
    return labels.map(label_key)


def classification_metrics(
    y: np.ndarray, pred: np.ndarray, classes: tuple[str, ...], proba: np.ndarray | None = None
) -> dict[str, float]:
    """`y` and `pred` are label keys; `proba` columns follow `classes`. A label outside `classes` is always wrong."""
    if len(y) == 0:
        raise ValueError("cannot score an empty holdout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" and the like: expected on small sets
        result = {
            "accuracy": float(sk.accuracy_score(y, pred)),
            "balanced_accuracy": float(sk.balanced_accuracy_score(y, pred)),
            "f1": float(sk.f1_score(y, pred, average="macro", zero_division=0)),
            "precision": float(sk.precision_score(y, pred, average="macro", zero_division=0)),
            "recall": float(sk.recall_score(y, pred, average="macro", zero_division=0)),
        }
    if proba is not None:
        result |= probability_metrics(y, classes, proba)
    return result


def probability_metrics(y: np.ndarray, classes: tuple[str, ...], proba: np.ndarray) -> dict[str, float]:
    """roc_auc and pr_auc (the positive class's for binary, one-vs-rest macro means otherwise) and log_loss."""
    index = {c: i for i, c in enumerate(classes)}
    y_index = np.array([index.get(k, -1) for k in y], dtype=np.int64)
    p_true = np.where(y_index >= 0, proba[np.arange(len(y)), np.clip(y_index, 0, None)], 0.0)
    # sklearn's log_loss refuses labels outside `classes`; this is its formula with such rows scored at eps
    result = {"log_loss": float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0))))}
    columns = [1] if len(classes) == 2 else range(len(classes))
    roc, pr = [], []
    for c in columns:
        truth = y_index == c
        if truth.all() or not truth.any():
            continue  # undefined for a class the holdout has all or none of
        roc.append(sk.roc_auc_score(truth, proba[:, c]))
        pr.append(sk.average_precision_score(truth, proba[:, c]))
    if roc:
        result["roc_auc"] = float(np.mean(roc))
        result["pr_auc"] = float(np.mean(pr))
    return result


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if len(y) == 0:
        raise ValueError("cannot score an empty holdout")
    return {
        "rmse": float(np.sqrt(sk.mean_squared_error(y, pred))),
        "mae": float(sk.mean_absolute_error(y, pred)),
        "r2": float(sk.r2_score(y, pred)) if len(y) > 1 else 0.0,
        "mape": float(sk.mean_absolute_percentage_error(y, pred)),
    }

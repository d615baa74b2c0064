"""Holdout metrics, lowercase names: accuracy, f1 (macro), log_loss; rmse, mae, r2."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.trainer.labels import label_keys

_EPS = 1e-15


def score(task: str, classes: tuple[str, ...], labels: pd.Series, raw: np.ndarray) -> dict[str, float]:
    """Metrics of `raw` model output (probabilities [n, classes] or values [n]) against true labels."""
    if task == "regression":
        return regression_metrics(labels.to_numpy(dtype=np.float64), raw)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(k, -1) for k in label_keys(labels)], dtype=np.int64)
    return classification_metrics(y, raw)


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """`y` holds class indices (-1 for a label the model never saw, always wrong); `proba` is [n, classes]."""
    if len(y) == 0:
        raise ValueError("cannot score an empty holdout")
    pred = proba.argmax(axis=1)
    f1s = []
    for c in range(proba.shape[1]):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    p_true = np.where(y >= 0, proba[np.arange(len(y)), np.clip(y, 0, None)], 0.0)
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1": float(np.mean(f1s)) if f1s else 0.0,
        "log_loss": float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0)))),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if len(y) == 0:
        raise ValueError("cannot score an empty holdout")
    err = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0,
    }

"""Live quality: the promotion policy's metrics computed on joined predictions, by the functions that score a holdout.

Pure: the quality monitor and the bake window read joined rows from the store and call `live_quality` on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ctloop.metrics import classification_metrics, label_key, regression_metrics
from ctloop.modelspec import REGRESSION_METRICS
from ctloop.monitors.outcome_records import JoinedPrediction


@dataclass(frozen=True)
class LiveQuality:
    """Metrics of `n` joined rows; a metric the rows cannot define (an AUC over one class) is absent."""

    n: int
    metrics: dict[str, float] = field(default_factory=dict)


def live_quality(rows: Sequence[JoinedPrediction], metrics: Sequence[str]) -> LiveQuality:
    """The named `metrics` of joined rows, by the same functions that score a holdout (`ctloop.metrics`).

    A prediction that is a mapping of class to probability gives the probability metrics (roc_auc, pr_auc,
    log_loss) and its most likely class for the others; a plain prediction is the predicted label, or the
    value when every metric asked for is a regression metric. Metrics the rows cannot give are absent."""
    import numpy as np

    wanted = tuple(metrics)
    if not rows or not wanted:
        return LiveQuality(len(rows), {})
    if all(m in REGRESSION_METRICS for m in wanted):
        values = [(float(r.label), float(r.prediction)) for r in rows if _numeric(r.label) and _numeric(r.prediction)]
        if not values:
            return LiveQuality(len(rows), {})
        y, pred = np.array(values, dtype=np.float64).T
        scored = regression_metrics(y, pred)
    else:
        y_keys = np.array([label_key(r.label) for r in rows], dtype=object)
        probabilities = [r.prediction for r in rows]
        if all(isinstance(p, dict) and p for p in probabilities):
            classes = tuple(sorted({label_key(c) for p in probabilities for c in p}, key=_class_order))
            proba = np.array([[float(_by_key(p).get(c, 0.0)) for c in classes] for p in probabilities])
            pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
            scored = classification_metrics(y_keys, pred, classes, proba)
        else:
            pred = np.array([label_key(p) for p in probabilities], dtype=object)
            classes = tuple(sorted(set(y_keys) | set(pred), key=_class_order))
            scored = classification_metrics(y_keys, pred, classes)
    return LiveQuality(len(rows), {m: scored[m] for m in wanted if m in scored and math.isfinite(scored[m])})


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _by_key(probabilities: dict[Any, Any]) -> dict[str, Any]:
    return {label_key(c): p for c, p in probabilities.items()}


def _class_order(key: str) -> tuple[int, float, str]:
    """Numeric classes in numeric order, so that "1" is the positive class of a 0/1 model, as in training."""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)

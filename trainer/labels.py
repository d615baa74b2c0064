"""One spelling per label value, so 1, 1.0 and "1" from CSV, parquet or a spec are the same class."""

from __future__ import annotations

import pandas as pd

from ctloop.metrics import label_key, label_keys
from ctloop.modelspec import DataSchema

__all__ = ["class_list", "label_key", "label_keys"]


def class_list(schema: DataSchema, labels: pd.Series) -> tuple[str, ...]:
    """The classes in output order: the schema's when declared, else the sorted labels seen."""
    if schema.classes is not None:
        return tuple(label_key(c) for c in schema.classes)
    return tuple(sorted(set(label_keys(labels))))

"""Checks a snapshot against a model's declared data schema before any training.

Validation is its own step: a bad file stops the workflow here and leaves the champion alone. Every
failure is one `DataValidationError` naming the file, the column (when there is one) and the rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ctloop.failures import Failure
from ctloop.modelspec import DataSchema
from ctloop.objectstore import StoreError, check_key
from ctloop.snapshot import Snapshot, SnapshotError, open_snapshot_store, read_object, relative_key, table_objects
from ctloop.trainer.labels import label_keys


class DataValidationError(ValueError, Failure):
    fix = "fix the data, or the spec's data schema if the data is right"

    def __init__(self, file: str, rule: str, detail: str, *, column: str | None = None) -> None:
        self.file, self.column, self.rule, self.detail = file, column, rule, detail
        where = f"{file}: column {column!r}" if column is not None else file
        super().__init__(f"{where}: rule {rule}: {detail}")


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    snapshot_digest: str
    files: int
    rows: int
    nan_share: dict[str, float]
    label_counts: dict[str, int]


def validate(snapshot: Snapshot, schema: DataSchema, *, s3_endpoint_url: str | None = None) -> ValidationReport:
    """Read every pinned file and check it; raises DataValidationError at the first violation."""
    if schema.kind == "files":
        return validate_files(snapshot, schema)
    if not table_objects(snapshot):
        raise DataValidationError(snapshot.uri, "non_empty", "snapshot holds no .parquet or .csv objects")
    for obj in snapshot.objects:
        try:
            check_key(obj.key)
        except StoreError as exc:
            raise DataValidationError(obj.key, "safe_key", str(exc)) from None
    store = open_snapshot_store(snapshot, s3_endpoint_url=s3_endpoint_url)
    rows = 0
    nan_counts = dict.fromkeys([*schema.feature_names, schema.label], 0)
    labels: dict[str, int] = {}
    for obj in table_objects(snapshot):
        name = store.uri(obj.key)
        try:
            frame = read_object(snapshot, obj, store=store)
        except SnapshotError as exc:
            raise DataValidationError(name, "unchanged", str(exc)) from None
        except Exception as exc:  # any parser failure means the file is unusable
            raise DataValidationError(name, "parses", f"{type(exc).__name__}: {exc}") from None
        check_frame(name, frame, schema)
        rows += len(frame)
        for column in nan_counts:
            nan_counts[column] += int(frame[column].isna().sum())
        for value, count in label_keys(frame[schema.label]).value_counts().items():
            labels[value] = labels.get(value, 0) + int(count)
    if rows < schema.min_rows:
        raise DataValidationError(snapshot.uri, "min_rows", f"{rows} rows, the schema needs at least {schema.min_rows}")
    too_few = schema.task != "regression" and len(labels) < 2
    if too_few or (schema.task == "binary" and len(labels) > 2):
        raise DataValidationError(
            snapshot.uri, "label_values", f"{schema.task} task but {len(labels)} distinct labels: {sorted(labels)[:5]}",
            column=schema.label,
        )
    return ValidationReport(
        snapshot_digest=snapshot.digest,
        files=len(table_objects(snapshot)),
        rows=rows,
        nan_share={c: n / rows for c, n in nan_counts.items()},
        label_counts=labels,
    )


def validate_files(snapshot: Snapshot, schema: DataSchema) -> ValidationReport:
    """A files dataset: safe keys, each file in a label directory, enough files, and valid labels.
    The files' content is the trainer's to read (ctloop reads it only through the spec's `inputs`)."""
    if not snapshot.objects:
        raise DataValidationError(snapshot.uri, "non_empty", "snapshot holds no data files")
    labels: dict[str, int] = {}
    for obj in snapshot.objects:
        try:
            check_key(obj.key)
        except StoreError as exc:
            raise DataValidationError(obj.key, "safe_key", str(exc)) from None
        rel = relative_key(snapshot, obj)
        if "/" not in rel:
            raise DataValidationError(obj.key, "label_directory",
                                      "a files dataset keeps each file in a directory named for its label "
                                      f"(e.g. {snapshot.uri.rstrip('/')}/LABEL/{rel})")
        label = rel.rsplit("/", 2)[-2]
        labels[label] = labels.get(label, 0) + 1
    if len(snapshot.objects) < schema.min_rows:
        raise DataValidationError(snapshot.uri, "min_rows",
                                  f"{len(snapshot.objects)} files, the schema needs at least {schema.min_rows}")
    if len(labels) < 2 or (schema.task == "binary" and len(labels) > 2):
        raise DataValidationError(snapshot.uri, "label_values",
                                  f"{schema.task} task but {len(labels)} label directories: {sorted(labels)[:5]}")
    if schema.classes is not None:
        bad = sorted(set(labels) - set(label_keys(pd.Series(schema.classes, dtype=object))))
        if bad:
            raise DataValidationError(snapshot.uri, "label_values", f"label directories {bad[:5]} not in classes")
    return ValidationReport(snapshot_digest=snapshot.digest, files=len(snapshot.objects), rows=len(snapshot.objects),
                            nan_share={}, label_counts=labels)


def check_frame(file: str, frame: pd.DataFrame, schema: DataSchema) -> None:
    """The per-file rules: columns present and typed, NaN share bounded, labels valid."""
    required = [*schema.feature_names, schema.label, *([schema.key] if schema.key else [])]
    for column in required:
        if column not in frame.columns:
            raise DataValidationError(file, "column_present", f"missing; file has {list(frame.columns)}", column=column)
    for column in schema.numeric:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise DataValidationError(file, "column_type", f"declared numeric but has dtype {series.dtype}",
                                      column=column)
    for column in schema.feature_names:
        share = float(frame[column].isna().mean()) if len(frame) else 0.0
        if share > schema.max_nan_share:
            raise DataValidationError(
                file, "max_nan_share", f"{share:.1%} missing, at most {schema.max_nan_share:.1%} allowed", column=column
            )
    if schema.key and frame[schema.key].isna().any():
        raise DataValidationError(file, "key_present", "row key has missing values", column=schema.key)
    _check_labels(file, frame[schema.label], schema)


def _check_labels(file: str, labels: pd.Series, schema: DataSchema) -> None:
    if labels.isna().any():
        raise DataValidationError(file, "label_values", f"{int(labels.isna().sum())} rows without a label",
                                  column=schema.label)
    if schema.task == "regression":
        numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
        if not numeric or not np.isfinite(labels.to_numpy(dtype=float)).all():
            raise DataValidationError(file, "label_values", f"regression needs finite numbers (dtype {labels.dtype})",
                                      column=schema.label)
        return
    if schema.classes is not None:
        allowed = set(label_keys(pd.Series(schema.classes, dtype=object)))
        bad = sorted(set(label_keys(labels)) - allowed)
        if bad:
            raise DataValidationError(file, "label_values", f"values {bad[:5]} not in classes {sorted(allowed)}",
                                      column=schema.label)

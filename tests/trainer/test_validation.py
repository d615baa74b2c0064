"""Each validation rule stops a bad snapshot with one error naming the file, the column and the rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.modelspec import DataSchema
from ctloop.snapshot import Snapshot, SnapshotObject, take_snapshot
from ctloop.trainer.validation import DataValidationError, validate
from tests.trainer.conftest import make_frame, make_spec, write_dataset

SCHEMA = make_spec().data


def _fails(directory: Path, schema: DataSchema = SCHEMA) -> DataValidationError:
    with pytest.raises(DataValidationError) as caught:
        validate(take_snapshot(str(directory)), schema)
    return caught.value


def _write(directory: Path, frame: pd.DataFrame, name: str = "bad.parquet") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / name, index=False)
    return directory


def test_a_good_snapshot_passes_with_a_report(dataset: Path) -> None:
    report = validate(take_snapshot(str(dataset)), SCHEMA)
    assert report.rows == 400 and report.files == 2
    assert report.nan_share == {"x1": 0.0, "x2": 0.0, "color": 0.0, "label": 0.0}
    assert set(report.label_counts) == {"0", "1"} and sum(report.label_counts.values()) == 400


def test_an_empty_snapshot_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    error = _fails(tmp_path / "empty")
    assert error.rule == "non_empty" and str(tmp_path / "empty") in str(error)


def test_a_file_that_does_not_parse_is_named(dataset: Path) -> None:
    (dataset / "part-2.parquet").write_bytes(b"this is not parquet")
    error = _fails(dataset)
    assert (error.rule, error.column) == ("parses", None)
    assert "part-2.parquet" in str(error) and "rule parses" in str(error)


def test_a_missing_declared_column(tmp_path: Path) -> None:
    error = _fails(_write(tmp_path / "d", make_frame(100).drop(columns=["x2"])))
    assert (error.rule, error.column) == ("column_present", "x2")
    assert "bad.parquet: column 'x2': rule column_present" in str(error)


def test_a_numeric_column_of_the_wrong_type(tmp_path: Path) -> None:
    error = _fails(_write(tmp_path / "d", make_frame(100).assign(x1="high")))
    assert (error.rule, error.column) == ("column_type", "x1")
    assert "bad.parquet: column 'x1': rule column_type: declared numeric" in str(error)


def test_too_many_missing_values_in_a_column(tmp_path: Path) -> None:
    frame = make_frame(100)
    frame.loc[:29, "x2"] = np.nan
    error = _fails(_write(tmp_path / "d", frame))
    assert (error.rule, error.column) == ("max_nan_share", "x2")
    assert "30.0% missing, at most 10.0% allowed" in str(error)


def test_a_few_missing_values_are_tolerated(tmp_path: Path) -> None:
    frame = make_frame(100)
    frame.loc[:4, "color"] = None
    report = validate(take_snapshot(str(_write(tmp_path / "d", frame))), SCHEMA)
    assert report.nan_share["color"] == 0.05


def test_a_label_outside_the_declared_classes(tmp_path: Path) -> None:
    frame = make_frame(100)
    frame.loc[3, "label"] = 7
    error = _fails(_write(tmp_path / "d", frame))
    assert (error.rule, error.column) == ("label_values", "label")
    assert "values ['7'] not in classes ['0', '1']" in str(error)


def test_a_row_without_a_label(tmp_path: Path) -> None:
    frame = make_frame(100).astype({"label": float})
    frame.loc[3, "label"] = np.nan
    error = _fails(_write(tmp_path / "d", frame))
    assert (error.rule, error.column) == ("label_values", "label") and "1 rows without a label" in str(error)


def test_a_binary_task_with_three_labels_and_no_declared_classes(tmp_path: Path) -> None:
    schema = SCHEMA.model_copy(update={"classes": None})
    error = _fails(_write(tmp_path / "d", make_frame(100, task="multiclass")), schema)
    assert error.rule == "label_values" and "binary task but 3 distinct labels" in str(error)


def test_a_regression_label_must_be_numeric(tmp_path: Path) -> None:
    schema = make_spec("regression").data
    error = _fails(_write(tmp_path / "d", make_frame(100).assign(label="big")), schema)
    assert (error.rule, error.column) == ("label_values", "label") and "finite numbers" in str(error)


def test_too_few_rows(tmp_path: Path) -> None:
    error = _fails(write_dataset(tmp_path / "d", files=2, rows=20))
    assert error.rule == "min_rows" and "40 rows, the schema needs at least 50" in str(error)


def test_a_declared_row_key_must_be_present(tmp_path: Path) -> None:
    error = _fails(_write(tmp_path / "d", make_frame(100).drop(columns=["id"])))
    assert (error.rule, error.column) == ("column_present", "id")


def test_an_object_key_with_path_traversal_is_rejected(dataset: Path) -> None:
    good = take_snapshot(str(dataset))
    sneaky = SnapshotObject(key=good.objects[0].key.rsplit("/", 1)[0] + "/../../etc/passwd.csv", size=1, etag="x")
    snapshot = Snapshot(uri=good.uri, digest=good.digest, root=good.root, objects=(*good.objects, sneaky))
    with pytest.raises(DataValidationError) as caught:
        validate(snapshot, SCHEMA)
    assert caught.value.rule == "safe_key" and "path traversal" in str(caught.value)


def test_a_file_changed_after_the_snapshot_is_rejected(dataset: Path) -> None:
    snapshot = take_snapshot(str(dataset))
    make_frame(200, seed=9).to_parquet(dataset / "part-0.parquet", index=False)
    with pytest.raises(DataValidationError) as caught:
        validate(snapshot, SCHEMA)
    assert caught.value.rule == "unchanged" and "part-0.parquet" in str(caught.value)

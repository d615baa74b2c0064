"""Serving's fast path gives what MLflow's own `predict` gives: a matrix request skips only a schema
enforcement that would have returned its frame unchanged; and what it logs is the request's own
columns and lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.deploy.scoring import parse_request
from ctloop.deploy.serving import _predict, loaded_model, served_batch
from ctloop.predictions import parse_batch


def saved(tmp_path: Path, features: pd.DataFrame, target: np.ndarray, name: str = "model"):
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000).fit(features, target)
    mlflow.sklearn.save_model(model, tmp_path / name, input_example=features.head(3), pip_requirements=[])
    return mlflow.pyfunc.load_model(str(tmp_path / name))


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.normal(size=(200, 5)), columns=[f"f{i}" for i in range(5)])
    return features, (features["f0"] + features["f3"] > 0).astype(int).to_numpy()


@pytest.fixture(scope="module")
def doubles(tmp_path_factory, table):
    return loaded_model("1", saved(tmp_path_factory.mktemp("doubles"), *table))


def body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()


def test_an_all_double_signature_gets_the_fast_path(doubles):
    assert doubles.features.matrix and doubles.prechecked is not None


def test_the_matrix_frame_is_what_mlflows_enforcement_returns(doubles, table):
    from mlflow.models.utils import _enforce_schema

    rows = table[0].sample(17, random_state=3)[["f3", "f1", "f0", "f4", "f2"]].reset_index(drop=True)
    rows["f1"] = rows["f1"].round().astype(int)  # JSON ints for a double feature
    request = parse_request(body(rows), doubles.features)
    frame = pd.DataFrame(request.matrix, columns=doubles.features.names)
    pd.testing.assert_frame_equal(_enforce_schema(frame, doubles.model.metadata.get_input_schema()), frame)


def test_fast_and_row_paths_predict_what_the_pyfunc_predicts(doubles, table):
    rows = table[0].sample(40, random_state=4).reset_index(drop=True)
    fast = parse_request(body(rows), doubles.features)
    slow = parse_request(json.dumps({"dataframe_records": rows.to_dict(orient="records")}).encode(),
                         doubles.features)
    assert fast.matrix is not None and slow.matrix is None
    expected = doubles.model.predict(rows).tolist()
    assert _predict(doubles, fast) == _predict(doubles, slow) == expected
    assert len(set(expected)) == 2, "a real classifier, not a constant"


def test_other_signatures_keep_mlflows_enforcement(tmp_path, table):
    features, target = table
    mixed = features.assign(f4=(features["f4"] > 0).astype(np.int64))  # a long column
    loaded = loaded_model("1", saved(tmp_path, mixed, target))
    assert not loaded.features.matrix and loaded.prechecked is None
    request = parse_request(body(mixed.head(5)), loaded.features)
    assert request.matrix is None and _predict(loaded, request) == loaded.model.predict(mixed.head(5)).tolist()


def test_a_matrix_request_is_logged_as_the_columns_and_lists_it_came_with(doubles, table):
    rows = table[0].head(4)
    shuffled = list(reversed(rows.columns))
    split = {"columns": shuffled, "data": rows[shuffled].values.tolist()}
    request = parse_request(json.dumps({"dataframe_split": split}).encode(), doubles.features)
    assert request.matrix is not None
    batch = served_batch("m", "3", request, [0, 1, 0, 1], ["a", "b", "c", "d"], datetime.now(UTC))
    assert batch.columns == shuffled and batch.data == rows[shuffled].values.tolist(), "as sent, no copy per row"
    again = parse_batch(batch.to_bytes())
    assert again.columnar and again.column(shuffled[0]) == rows[shuffled[0]].tolist()
    assert again.rows == rows.to_dict(orient="records")

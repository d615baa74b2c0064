"""The encoder is fitted on training rows and copes with what serving sends it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.trainer.model import Encoder, build_module
from tests.trainer.conftest import make_frame, make_spec

SCHEMA = make_spec().data


def test_numeric_features_are_standardised_on_the_training_rows() -> None:
    frame = make_frame(1000)
    x_num, _ = Encoder.fit(frame, SCHEMA).features(frame)
    assert np.allclose(x_num.numpy().mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(x_num.numpy().std(axis=0), 1.0, atol=1e-3)


def test_missing_numbers_are_imputed_and_unseen_categories_share_one_index() -> None:
    encoder = Encoder.fit(make_frame(200), SCHEMA)
    raw = pd.DataFrame({"x1": [None, 1.0], "x2": [3.0, np.inf], "color": ["purple", None]})
    x_num, x_cat = encoder.features(raw)
    assert x_num[0, 0] == 0.0 and x_num[1, 1] == 0.0
    assert x_cat[:, 0].tolist() == [0, 0]
    assert encoder.features(pd.DataFrame({"x1": [0.0], "x2": [0.0], "color": ["red"]}))[1][0, 0] > 0


def test_class_labels_keep_the_type_the_schema_declares() -> None:
    encoder = Encoder.fit(make_frame(200), SCHEMA)
    assert encoder.classes == ("0", "1") and encoder.class_values == (0, 1)
    assert encoder.targets(pd.Series([1, 0, 1.0])).tolist() == [1, 0, 1]


def test_the_module_has_one_output_per_class_or_one_for_regression() -> None:
    frame = make_frame(200, task="multiclass")
    encoder = Encoder.fit(frame, make_spec("multiclass").data)
    out = build_module(encoder, (8,))(*encoder.features(frame))
    assert tuple(out.shape) == (200, 3)
    regression = Encoder.fit(make_frame(200, task="regression"), make_spec("regression").data)
    assert build_module(regression, (8,))(*regression.features(frame)).shape[1] == 1

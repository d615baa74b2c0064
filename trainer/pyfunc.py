"""The MLflow pyfunc flavour of a trained model: raw feature columns in, labels or values out.

`predict(frame)` returns class labels (classification) or values (regression);
`predict(frame, params={"output": "proba"})` returns one probability column per class, which is what
evaluation's log loss needs. Preprocessing travels inside the model, so callers pass raw columns.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from ctloop.trainer.model import TabularModel

BUNDLE = "bundle"


class TabularPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self._model = TabularModel.load(Path(context.artifacts[BUNDLE]))

    def predict(self, context, model_input, params=None):
        output = (params or {}).get("output", "label")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if output == "proba":
            if self._model.encoder.task == "regression":
                raise ValueError("output='proba' needs a classification model; this one is a regression")
            return pd.DataFrame(self._model.raw(frame), columns=list(self._model.encoder.classes))
        if output != "label":
            raise ValueError(f"unknown output {output!r}: use 'label' or 'proba'")
        return pd.Series(self._model.predict(frame), name="prediction")


class ModulePyfunc(mlflow.pyfunc.PythonModel):
    """A user's `torch.nn.Module` with their `predict(module, model_input)`, as a pyfunc. Both are pickled by
    reference to the user's package, which is logged with the model (`code_paths`)."""

    def __init__(self, module, predict, *, takes_params: bool) -> None:
        self.module = module
        self.predict_fn = predict
        self.takes_params = takes_params

    def predict(self, context, model_input, params=None):
        import torch

        with torch.no_grad():
            if self.takes_params:
                return self.predict_fn(self.module, model_input, params=params)
            return self.predict_fn(self.module, model_input)

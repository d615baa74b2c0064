"""The trainer ctloop calls: a gradient-boosting regressor, returned as an MLflow PythonModel."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error

from ctloop import TrainContext, TrainResult
from diabetes_sklearn.data import FEATURES, LABEL


class Progression(mlflow.pyfunc.PythonModel):
    """What serving calls: the ten measurements in, predicted progression out."""

    def __init__(self, regressor: GradientBoostingRegressor) -> None:
        self.regressor = regressor

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        return self.regressor.predict(model_input[FEATURES])


def train(ctx: TrainContext) -> TrainResult:
    regressor = GradientBoostingRegressor(n_estimators=int(ctx.params["trees"]), max_depth=int(ctx.params["depth"]),
                                          learning_rate=float(ctx.params["learning_rate"]), random_state=ctx.seed)
    regressor.fit(ctx.train[FEATURES], ctx.train[LABEL])
    val_mae = mean_absolute_error(ctx.validation[LABEL], regressor.predict(ctx.validation[FEATURES]))
    ctx.log_metric("val_mae", val_mae)
    return TrainResult(model=Progression(regressor), input_example=ctx.train[FEATURES].head(5),
                       metrics={"val_mae": val_mae})

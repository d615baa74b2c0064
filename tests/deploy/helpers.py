"""Tiny real pyfunc models and evaluations for the deploy tests."""

from __future__ import annotations

from ctloop.deploy.registry import Registry
from ctloop.evaluation import Evaluation


def register(registry: Registry, name: str, uri: str) -> str:
    """A new version of `name` for the logged model at `uri`; its version number."""
    return registry.create_version(name, uri, run_id=None, tags={}).version


def log_constant_model(tracking_uri: str, value: float) -> str:
    """Log a pyfunc model that predicts `value` for every row; returns its models:/ URI."""
    import mlflow
    import pandas as pd

    class Constant(mlflow.pyfunc.PythonModel):
        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, context, model_input, params=None):
            return [self.value] * len(model_input)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("ctloop-deploy-tests")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(value), input_example=pd.DataFrame({"x": [1.0], "y": [2.0]}),
            pip_requirements=[],
        )
    return info.model_uri


def evaluation(model: str, uri: str, accuracy: float, champion: tuple[str, float] | None = None,
               **extra: float) -> Evaluation:
    return Evaluation(
        model=model, challenger_uri=uri, challenger={"accuracy": accuracy, **extra},
        champion_version=champion[0] if champion else None,
        champion={"accuracy": champion[1]} if champion else None,
        holdout_digest="holdout-1", holdout_rows=100,
    )


def log_failing_model(tracking_uri: str) -> str:
    """Log a pyfunc model whose predict always raises; returns its models:/ URI."""
    import mlflow
    import pandas as pd

    class Failing(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            if len(model_input) and model_input.iloc[0].get("x") != 0.5:  # the input example must pass
                raise RuntimeError("this model is broken")
            return [0.0] * len(model_input)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("ctloop-deploy-tests")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Failing(), input_example=pd.DataFrame({"x": [0.5], "y": [2.0]}),
            pip_requirements=[],
        )
    return info.model_uri

"""Fixtures of the deploy tests: a logged model on the real `mlflow server` and fresh model names."""

from __future__ import annotations

import uuid

import pytest

from tests.deploy.helpers import log_constant_model


@pytest.fixture(scope="session")
def constant_model_uri(mlflow_server: str) -> str:
    """One logged model: promotion tests register it many times as different versions."""
    return log_constant_model(mlflow_server, 1.0)


@pytest.fixture
def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def other_model_uri(mlflow_server: str) -> str:
    """A model that predicts 2.0, to tell served versions apart."""
    return log_constant_model(mlflow_server, 2.0)

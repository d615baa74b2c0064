"""Fixtures of the reliability tests."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import log_constant_model


@pytest.fixture(scope="session")
def uri(mlflow_server: str) -> str:
    """One logged model, registered again under fresh model names by each promotion test."""
    return log_constant_model(mlflow_server, 1.0)

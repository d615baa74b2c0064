"""Fixtures of the deploy tests: logged models on the real `mlflow server`, fresh model names, the registry, an
embedded bus, and a champion to serve."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.embedded_bus import EmbeddedBus
from tests.deploy.helpers import log_constant_model, register


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


@pytest.fixture
def registry(mlflow_server: str) -> Registry:
    return Registry(mlflow_server)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[EmbeddedBus]:
    bus = EmbeddedBus(tmp_path / "bus.db")
    yield bus
    bus.close()


@pytest.fixture
def champion(registry: Registry, model_name: str, constant_model_uri: str) -> str:
    """A version of `model_name` (predicting 1.0) promoted to champion by hand."""
    version = register(registry, model_name, constant_model_uri)
    promote(registry, model_name, version, actor="test", reason="initial", manual=True)
    return version

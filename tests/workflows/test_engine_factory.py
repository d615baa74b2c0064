"""open_engine: the engine the settings name, configured as its caller asks."""

from __future__ import annotations

from ctloop.settings import Settings
from ctloop.workflows.argo_engine import ArgoEngine
from ctloop.workflows.engine_factory import open_engine
from ctloop.workflows.local.engine import LocalEngine


def test_the_local_engine_restarts_interrupted_runs_only_when_asked(tmp_path):
    settings = Settings(home=tmp_path)
    plain, sensor = open_engine(settings), open_engine(settings, retry_interrupted=2)
    assert isinstance(plain, LocalEngine) and plain.retry_interrupted == 0
    assert isinstance(sensor, LocalEngine) and sensor.retry_interrupted == 2


def test_argo_settings_open_the_argo_engine(tmp_path):
    assert isinstance(open_engine(Settings(home=tmp_path, engine="argo")), ArgoEngine)

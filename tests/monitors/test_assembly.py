"""The monitor as `ctloop monitor run` and the demo assemble it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.modelspec import DataSchema, Feature, ModelSpec, save_spec
from ctloop.monitors.assembly import drift_monitor, monitor_service
from ctloop.monitors.monitor import MonitorConfig
from ctloop.monitors.reference import ReferenceNotFound
from ctloop.monitors.window import WindowPolicy
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings

CONFIG = MonitorConfig(window=WindowPolicy(max_rows=500))


@pytest.fixture
def settings(tmp_path):
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    return settings


@pytest.fixture
def profile(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1000), "c": rng.choice(["a", "b"], 1000)})
    path = tmp_path / "profile.json"
    path.write_text(build_profile(frame, numeric=["x"], categorical=["c"]).to_json())
    return path


def test_the_monitor_compares_against_the_profile_and_names_the_specs_retrain_uri(settings, profile, tmp_path):
    retrain = (tmp_path / "recent").as_uri() + "/"
    schema = DataSchema(features=(Feature(name="x"), Feature(name="c", kind="categorical")), label="y")
    save_spec(ModelSpec(name="m", data=schema, retrain_uri=retrain), settings)
    monitor = drift_monitor(settings, "m", CONFIG, profile=profile)
    assert monitor.model == "m" and monitor.reference.version is None
    assert monitor.retrain_uri == retrain
    assert sorted(monitor.detector.numeric) == ["x"] and sorted(monitor.detector.categorical) == ["c"]


def test_without_a_spec_drift_events_carry_no_data_to_retrain_on(settings, profile):
    assert drift_monitor(settings, "m", CONFIG, profile=profile).retrain_uri is None


def test_without_a_profile_or_a_champion_the_reference_is_missing_by_name(settings):
    with pytest.raises(ReferenceNotFound, match="models:/m@champion"):
        drift_monitor(settings, "m", CONFIG)


def test_the_service_reads_the_prediction_topic_as_its_group(settings, profile):
    bus = EmbeddedBus(settings.state_db)
    rows = [{"x": float(i % 7), "c": "a"} for i in range(500)]
    bus.publish(settings.topics.predictions, PredictionBatch(model="m", version="1", rows=rows,
                                                             predictions=[0] * 500).to_bytes())
    service = monitor_service(settings, bus, "m", CONFIG, profile=profile, group="g1")
    try:
        [outcome] = service.step(timeout_s=0.5)
        assert outcome.verdict.rows == 500 and service.stats.windows == 1
    finally:
        service.close()
    again = monitor_service(settings, bus, "m", CONFIG, profile=profile, group="g1")
    try:
        assert again.step(timeout_s=0.2) == [], "the group committed the closed window"
    finally:
        again.close()
        bus.close()

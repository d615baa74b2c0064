"""The sensor decides a recorded stream of 100k mixed events exactly as the per-event sensor did.

The expected digests were recorded from the per-event path before batch admission (see
`tests.sensors.recorded_stream`); every decision, dead letter and run is part of them.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.sensors.recorded_stream import FIXTURE, SCENARIOS, generate, replay

RECORDED = json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def stream():
    return generate(RECORDED["seed"], RECORDED["events"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_recorded_stream_is_decided_as_the_per_event_sensor_decided_it(scenario, stream, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="ctloop.sensor")
    expected = RECORDED["scenarios"][scenario]
    got = replay(stream, SCENARIOS[scenario], tmp_path)
    assert got["counts"] == expected["counts"]
    differing = [n for n, (a, b) in enumerate(zip(got["chunks"], expected["chunks"], strict=True)) if a != b]
    assert not differing, f"decisions differ for the events first seen in chunks {differing[:10]}"

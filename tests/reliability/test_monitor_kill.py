"""A drift monitor (`ctloop monitor run`, its own process) SIGKILLed at random points, 10 times over,
with its reports and alert state in an S3 object store: no drifting window loses its event or its
report, every drift episode is alerted, none twice, and the alert state ends as an unkilled
monitor's would. A monitor killed once it has alerted an episode, and restarted while the episode
goes on, does not alert it again."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.monitors.alerts import AlertLedger, AlertPolicy
from ctloop.monitors.monitor import DriftMonitor, MonitorConfig
from ctloop.monitors.reference import Reference
from ctloop.monitors.window import WindowPolicy
from ctloop.objectstore import open_uri
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings
from tests.monitors.conftest import webhook  # noqa: F401 - the Slack stand-in

pytestmark = [pytest.mark.reliability, pytest.mark.s3]
CTLOOP = Path(sys.executable).with_name("ctloop")
# Clean windows of 1000 rows sit well under the drift threshold, drifting ones far above it.
ROWS = 1000
T0 = datetime(2026, 11, 1, tzinfo=UTC)
# C: a clean window, D: a drifting one; three clean windows end an episode.
PATTERN = "CCDDDCCCCDDDDCCCCDDCCCCDDD"


def _batches(pattern: str, start: int = 0) -> list[PredictionBatch]:
    rng = np.random.default_rng(start)
    out = []
    for i, kind in enumerate(pattern, start):
        rows = [{"x": float(v)} for v in rng.normal(3.0 if kind == "D" else 0.0, 1, ROWS)]
        out.append(PredictionBatch(model="m", rows=rows, predictions=[0] * ROWS, ts=T0 + timedelta(minutes=i)))
    return out


def _profile_file(tmp_path: Path) -> Path:
    frame = pd.DataFrame({"x": np.random.default_rng(99).normal(0, 1, 2000)})
    path = tmp_path / "profile.json"
    path.write_text(build_profile(frame, numeric=["x"], categorical=[]).to_json())
    return path


def _monitor(home: Path, profile: Path, hook: str, bucket_uri: str, endpoint: str) -> subprocess.Popen:
    env_home = {"CTLOOP_HOME": str(home), "CTLOOP_STORE_URI": bucket_uri, "CTLOOP_S3_ENDPOINT_URL": endpoint}
    proc = subprocess.Popen(
        [str(CTLOOP), "monitor", "run", "--model", "m", "--bus", "embedded", "--profile", str(profile),
         "--window-rows", str(ROWS), "--webhook", hook, "--clean-windows", "3", "--cooldown", "0",
         "--duration", "120"],
        env={**os.environ, **env_home}, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("monitoring m"), f"the monitor said {line!r}"
    return proc


def _drift_events(bus: EmbeddedBus) -> dict[str, object]:
    consumer = bus.consumer(["ctloop.drift"], f"check-{time.monotonic_ns()}")
    try:
        return {event.id: event for event in (parse(m.value) for m in consumer.poll(0.5, max_records=10_000))}
    finally:
        consumer.close()


def _episodes(received: list[dict]) -> list[str]:
    return [re.search(r"Episode: (\S+)", alert["blocks"][1]["text"]["text"]).group(1) for alert in received]


def _unkilled(pattern: str) -> tuple[set[str], list[str], object]:
    """What one monitor that is never killed publishes and alerts, and the episode state it ends with."""
    reference = Reference(build_profile(pd.DataFrame({"x": np.random.default_rng(99).normal(0, 1, 2000)}),
                                        numeric=["x"], categorical=[]), "m")
    monitor = DriftMonitor(reference, MonitorConfig(window=WindowPolicy(max_rows=ROWS),
                                                    alerts=AlertPolicy(clean_windows=3, cooldown_s=0)))
    events, episodes = set(), []
    for batch in _batches(pattern):
        for outcome in monitor.add(batch):
            if outcome.event is not None:
                events.add(outcome.event.id)
            if outcome.alert is not None:
                episodes.append(outcome.episode.episode)
    return events, episodes, monitor.episode


def test_a_monitor_killed_at_random_points_loses_no_event_report_or_alert(tmp_path, s3_endpoint, s3_bucket, webhook):  # noqa: F811
    rng = random.Random(15)
    home, bucket_uri = tmp_path / "home", f"s3://{s3_bucket}/ctloop"
    home.mkdir()
    settings = Settings(home=home)
    bus = EmbeddedBus(settings.state_db)
    for batch in _batches(PATTERN):
        bus.publish("ctloop.predictions", batch.to_bytes(), key="m")
    profile = _profile_file(tmp_path)
    expected_events, expected_episodes, expected_state = _unkilled(PATTERN)
    assert (len(expected_events), len(expected_episodes)) == (PATTERN.count("D"), 4)

    for _ in range(10):
        proc = _monitor(home, profile, webhook.url, bucket_uri, s3_endpoint)
        time.sleep(rng.uniform(0.2, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The last restart runs until the stream is done.
    proc = _monitor(home, profile, webhook.url, bucket_uri, s3_endpoint)
    deadline = time.monotonic() + 120
    while not expected_events <= set(_drift_events(bus)) or len(webhook) < len(expected_episodes):
        assert time.monotonic() < deadline, f"{len(_drift_events(bus))} drift events, {len(webhook)} alerts after 120 s"
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    events = _drift_events(bus)
    assert set(events) == expected_events
    store, _ = open_uri(bucket_uri + "/", s3_endpoint_url=s3_endpoint)
    for event in events.values():
        report = event.data.report_uri
        assert report and report.startswith(f"s3://{s3_bucket}/ctloop/reports/m/")
        assert store.get(report.removeprefix(f"s3://{s3_bucket}/")).lower().lstrip().startswith(b"<!doctype html>")
    # A kill between a send and its record (milliseconds out of seconds) would repeat one alert: none did.
    assert sorted(_episodes(webhook)) == sorted(expected_episodes)
    record = AlertLedger(bucket_uri, s3_endpoint_url=s3_endpoint).load("m")
    assert record.state == expected_state and record.pending == ()
    bus.close()


def test_a_restarted_monitor_does_not_alert_an_episode_already_alerted(tmp_path, s3_endpoint, s3_bucket, webhook):  # noqa: F811
    home, bucket_uri = tmp_path / "home", f"s3://{s3_bucket}/ctloop"
    home.mkdir()
    bus = EmbeddedBus(Settings(home=home).state_db)
    first, more = _batches("CCDDD"), _batches("DDDD", start=5)
    for batch in first:
        bus.publish("ctloop.predictions", batch.to_bytes(), key="m")
    profile = _profile_file(tmp_path)
    ledger = AlertLedger(bucket_uri, s3_endpoint_url=s3_endpoint)

    proc = _monitor(home, profile, webhook.url, bucket_uri, s3_endpoint)
    deadline = time.monotonic() + 60
    while len(_drift_events(bus)) < 3:
        assert time.monotonic() < deadline, "the monitor did not get through the first drifting windows"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [alert] = webhook
    assert AlertLedger(bucket_uri, s3_endpoint_url=s3_endpoint).load("m").state.in_episode

    for batch in more:
        bus.publish("ctloop.predictions", batch.to_bytes(), key="m")
    proc = _monitor(home, profile, webhook.url, bucket_uri, s3_endpoint)
    deadline = time.monotonic() + 60
    while len(_drift_events(bus)) < 7:
        assert time.monotonic() < deadline, "the restarted monitor did not process the episode's later windows"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    assert webhook == [alert], "the restarted monitor alerted the same episode again"
    assert ledger.load("m").state.episode == _episodes([alert])[0]
    bus.close()

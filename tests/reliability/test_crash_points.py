"""The crash-point matrix: each named crash point of the sensor, the local engine, the promoter and the drift
monitor, SIGKILLed there in turn (`CTLOOP_CRASH_AT`), restarted, and audited from outside (registry and bus,
`outside_audit`): 0 lost events, 0 duplicate registrations, 0 duplicate alias moves, 0 unannounced alias
moves, every bad message dead-lettered exactly once; the monitor: every drifting window's event and report,
every drift episode alerted.

The sensor, engine and promoter share one process, as `ctloop sensor run` runs them (the engine's steps in
process), on the real broker and a real `mlflow server`; the monitor is its own process on the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctloop.app.demo.runner import settings_env
from ctloop.crashpoints import ENV
from ctloop.deadletter import origin_of
from ctloop.deploy.lock import LOCK_PREFIX
from ctloop.deploy.outbox import OUTBOX_PREFIX
from ctloop.deploy.promotion import INTENT_TAG
from ctloop.deploy.registry import Registry
from ctloop.events import DataArrived, new_event, parse, to_bytes
from ctloop.objectstore import StoreError, open_uri
from ctloop.predictions import PredictionBatch
from ctloop.profile import build_profile
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from tests.monitors.conftest import webhook  # noqa: F401 - the Slack stand-in
from tests.reliability.chaos import _query
from tests.reliability.crash_steps import MODEL_URI_ENV
from tests.reliability.outside_audit import Expected, audit

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.mlflow_server]
REPO = Path(__file__).resolve().parents[2]
GARBAGE = (b"\xff not json", b'{"specversion": "1.0", "id": "x", "type": "ctloop.nope", "source": "t"}')
TIMEOUT_S = 120

# (component, point, pass): the pass is where the crash leaves work done before it and work after it.
PIPELINE = [
    ("sensor", "decision-recorded", 1),
    ("sensor", "offset-committed", 1),
    ("sensor", "dead-letter-published", 1),
    ("engine", "run-key-claimed", 2),
    ("engine", "step-output-written", 3),
    ("promoter", "model-registered", 1),
    ("promoter", "alias-moved", 1),  # challenger set at registration
    ("promoter", "alias-moved", 2),  # inside a move: champion written, nothing committed
    ("promoter", "audit-written", 1),  # the move's commit point
    ("promoter", "outbox-recorded", 1),
    ("promoter", "event-published", 1),
    ("promoter", "outbox-marked", 1),
]
MONITOR = [
    ("monitor", "dead-letter-published", 1),
    ("monitor", "report-written", 1),
    ("monitor", "event-published", 1),
    ("monitor", "alert-state-written", 1),  # the episode's alert decided, not yet sent
    ("monitor", "offset-committed", 3),
]


def _settings(home: Path, bootstrap: str, tracking_uri: str | None = None) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics(data=f"cp-data-{tag}", drift=f"cp-drift-{tag}", deadletter=f"cp-dead-{tag}",
                    runs=f"cp-runs-{tag}", models=f"cp-models-{tag}", predictions=f"cp-pred-{tag}")
    return Settings(home=home, bus="kafka", kafka_bootstrap=bootstrap, topics=topics,
                    mlflow_tracking_uri=tracking_uri)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV and not k.startswith("CTLOOP_")}
    env.update({k: v for k, v in settings_env(settings).items() if v is not None})
    return {**env, "CTLOOP_CODE_VERSION": code_version(), **extra}


def _settled(db: Path, events: int) -> bool:
    """Every event decided, nothing queued or running in the sensor, no run unfinished."""
    decided = _query(db, "SELECT COUNT(*) FROM sensor_events")
    if not decided or decided[0][0] < events:
        return False
    states = [json.loads(s) for (s,) in _query(db, "SELECT state FROM sensor_state")]
    if any(s["running"] or s["queued"] or s["windows"] for s in states):
        return False
    return not _query(db, "SELECT 1 FROM wf_runs WHERE status IN ('Pending', 'Running') LIMIT 1")


def _crash_then_recover(command: list[str], env: dict[str, str], point: str, nth: int,
                        done: Callable[[], bool], why: Callable[[], str]) -> None:
    """Run with the point armed until it kills the process; run again unarmed until `done()`; `why()` says
    what is left when it does not finish."""
    crashed = _run(command, {**env, ENV: f"{point}@{nth}"}, f"the armed run ({point}@{nth})")
    assert crashed.returncode == -signal.SIGKILL, f"never reached {point}@{nth}: {crashed.stderr[-3000:]}"
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not done():
            if proc.poll() is not None:
                break
            assert time.monotonic() < deadline, f"the restarted process did not finish after {point}@{nth}: {why()}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert done(), f"the restarted process exited {proc.returncode} before finishing: {err[-3000:]}"


def _run(command: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, cwd=REPO, env=env, timeout=TIMEOUT_S, capture_output=True, text=True)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"{what} did not end within {TIMEOUT_S} s; its log: {err[-3000:]}") from None


def _left(db: Path) -> str:
    """The sensor's admission state and the unfinished runs, for a run that did not settle."""
    state = _query(db, "SELECT state FROM sensor_state")
    runs = _query(db, "SELECT id, idempotency_key, status FROM wf_runs WHERE status IN ('Pending', 'Running')")
    return f"sensor state {state}; unfinished runs {runs}"


# --- sensor, engine, promoter --------------------------------------------------------------------


def _arrival(model: str, digest: str, event_id: str) -> bytes:
    return to_bytes(new_event(DataArrived(model=model, uri=f"file:///data/{model}/{digest}", digest=digest),
                              id=event_id))


@pytest.mark.parametrize(("component", "point", "nth"), PIPELINE, ids=[f"{c}-{p}@{n}" for c, p, n in PIPELINE])
def test_the_pipeline_crashed_at_a_named_point_recovers_with_nothing_lost_or_duplicated(
        component, point, nth, tmp_path, kafka_bootstrap, kafka_bus, mlflow_server, uri):
    settings = _settings(tmp_path, kafka_bootstrap, mlflow_server)
    tag = uuid.uuid4().hex[:6]
    models = [f"cp{tag}-{n}" for n in range(3)]
    # Three arrivals, a repeat of the first data under a new id, a redelivery, and two bad messages.
    messages = [(models[0], _arrival(models[0], "d0", f"{tag}-e0")), (None, GARBAGE[0]),
                (models[1], _arrival(models[1], "d1", f"{tag}-e1")),
                (models[0], _arrival(models[0], "d0", f"{tag}-again")),
                (models[2], _arrival(models[2], "d2", f"{tag}-e2")), (None, GARBAGE[1]),
                (models[1], _arrival(models[1], "d1", f"{tag}-e1"))]
    for key, value in messages:
        kafka_bus.publish(settings.topics.data, value, key=key)
    kafka_bus.flush()
    bad = frozenset((m.topic, m.partition, m.offset) for m in kafka_bus.read_all(settings.topics.data)
                    if m.value in GARBAGE)
    env = _env(settings, **{MODEL_URI_ENV: uri})

    _crash_then_recover([sys.executable, "-m", "tests.reliability.crash_process"], env, point, nth,
                        lambda: _settled(settings.state_db, 4), lambda: _left(settings.state_db))

    registry = Registry(mlflow_server)
    figures = audit(registry, kafka_bus, models=models, models_topic=settings.topics.models,
                    deadletter_topic=settings.topics.deadletter, state_db=settings.state_db,
                    expected=Expected(frozenset((m, f"d{n}") for n, m in enumerate(models)), bad))
    _record(component, point, nth, figures)
    assert figures.problems == (), (figures.problems, [registry.model(m).audit for m in models])
    assert figures.versions == 3 and figures.alias_moves == 3 and figures.dead_letters == 2
    for model in models:
        info = registry.model(model)
        assert info.aliases == {"champion": "1"}, (model, info.aliases)
        left = [k for k in info.tags if k.startswith((OUTBOX_PREFIX, LOCK_PREFIX)) or k == INTENT_TAG]
        assert left == [], f"{model} keeps {left}"


# --- drift monitor --------------------------------------------------------------------------------

ROWS = 500
T0 = datetime(2026, 11, 1, tzinfo=UTC)
# C: a clean window, D: a drifting one (one batch each); three clean windows end an episode.
PATTERN = "CDDCCCDCD"
EPISODES = 2
MONITOR_GARBAGE = (b"not a batch", b'{"model": "m"}')


def _batch(kind: str, i: int) -> bytes:
    rows = [{"x": float(v)} for v in np.random.default_rng(1000 + i).normal(3.0 if kind == "D" else 0.0, 1, ROWS)]
    batch = PredictionBatch(model="m", rows=rows, predictions=[0] * ROWS, ts=T0 + timedelta(minutes=i))
    return batch.to_bytes()


@pytest.mark.parametrize(("component", "point", "nth"), MONITOR, ids=[f"{c}-{p}@{n}" for c, p, n in MONITOR])
def test_the_monitor_crashed_at_a_named_point_recovers_with_nothing_lost_or_duplicated(
        component, point, nth, tmp_path, kafka_bootstrap, kafka_bus, webhook):  # noqa: F811
    settings = _settings(tmp_path, kafka_bootstrap)
    profile = tmp_path / "profile.json"
    profile.write_text(build_profile(pd.DataFrame({"x": np.random.default_rng(99).normal(0, 1, 2000)}),
                                     numeric=["x"], categorical=[]).to_json())
    for i, kind in enumerate(PATTERN):
        if i in (1, 4):
            kafka_bus.publish(settings.topics.predictions, MONITOR_GARBAGE[i % 2], key="m")
        kafka_bus.publish(settings.topics.predictions, _batch(kind, i), key="m")
    kafka_bus.flush()
    sent = kafka_bus.read_all(settings.topics.predictions)
    bad = frozenset((m.topic, m.partition, m.offset) for m in sent if m.value in MONITOR_GARBAGE)
    last = max(m.offset for m in sent)
    command = [sys.executable, "-m", "tests.reliability.crash_monitor_process", str(profile), str(ROWS),
               webhook.url, str(last)]
    crashed = _run(command, {**_env(settings), ENV: f"{point}@{nth}"}, f"the armed monitor ({point}@{nth})")
    assert crashed.returncode == -signal.SIGKILL, f"never reached {point}@{nth}: {crashed.stderr[-3000:]}"
    restarted = _run(command, _env(settings), "the restarted monitor")
    assert restarted.returncode == 0, f"the restarted monitor did not finish: {restarted.stderr[-3000:]}"

    drift = [parse(m.value) for m in kafka_bus.read_all(settings.topics.drift)]
    per_id = Counter(e.id for e in drift)
    reports = [e.data.report_uri for e in drift]
    dead = Counter(origin_of(m) for m in kafka_bus.read_all(settings.topics.deadletter))
    alerts = list(webhook)
    figures = {"drifting windows": PATTERN.count("D"), "drift events": len(per_id),
               "republished": sum(per_id.values()) - len(per_id), "episodes": EPISODES,
               "alerts": len(alerts), "bad messages": len(bad), "dead letters": sum(dead.values())}
    _record(component, point, nth, figures)
    assert len(per_id) == PATTERN.count("D"), "0 lost drift events"
    assert all(_stored(r) for r in reports), f"every drift event's report is stored: {reports}"
    assert dead == dict.fromkeys(bad, 1), "every bad message dead-lettered exactly once"
    assert len({_episode(a) for a in alerts}) == EPISODES, f"every episode alerted: {alerts}"
    assert len(alerts) == EPISODES, "no episode alerted twice"


def _stored(uri: str | None) -> bool:
    if uri is None:
        return False
    store, key = open_uri(uri)
    try:
        store.get(key)
    except StoreError:
        return False
    return True


def _episode(alert: dict) -> str:
    """The `Episode: ...` line of a Slack alert."""
    text = alert["blocks"][1]["text"]["text"]
    return next(line for line in text.splitlines() if line.startswith("Episode: "))


def _record(component: str, point: str, nth: int, figures: object) -> None:
    """Append the cell's figures for BENCHMARKS.md (CTLOOP_CRASH_MATRIX names the JSON-lines file)."""
    out = os.environ.get("CTLOOP_CRASH_MATRIX")
    if out:
        row = figures if isinstance(figures, dict) else {k: v for k, v in vars(figures).items() if k != "problems"}
        with open(out, "a") as f:
            f.write(json.dumps({"component": component, "point": f"{point}@{nth}", **row}) + "\n")

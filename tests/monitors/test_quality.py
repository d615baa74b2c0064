"""Live quality end to end on the real broker and a real `mlflow server`: a champion worse on live labels than
its spec allows raises one `ctloop.quality.degraded`, logged against its version and exposed to Prometheus;
its labelled rows land under `retrain_uri`; the quality sensor admits one retrain within the cooldown."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from ctloop.events import LabelObserved, QualityDegraded, new_event, parse, to_bytes
from ctloop.modelspec import ModelSpec, save_spec
from ctloop.monitors.outcomes_landing import LANDED_OBJECT
from ctloop.monitors.outcomes_service import outcomes_service
from ctloop.predictions import PredictionBatch
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.decisions import list_decisions
from ctloop.settings import Settings, Topics
from tests.deploy.helpers import log_constant_model
from tests.sensors.helpers import drain, make_sensor
from tests.sensors.ledger import LedgerEngine

pytestmark = [pytest.mark.kafka, pytest.mark.mlflow_server]
N = 300


@pytest.fixture
def settings(tmp_path, kafka_bootstrap, mlflow_server):
    tag = uuid.uuid4().hex[:10]
    topics = Topics(predictions=f"pred-{tag}", labels=f"labels-{tag}", deadletter=f"dead-{tag}",
                    quality=f"quality-{tag}", data=f"data-{tag}", drift=f"drift-{tag}")
    return Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics,
                    mlflow_tracking_uri=mlflow_server)


def registered_version(tracking_uri: str, name: str, holdout_roc_auc: float) -> tuple[str, str]:
    """A real registered version tagged with its holdout roc_auc as the promoter tags it; (version, run id)."""
    import mlflow
    from mlflow import MlflowClient

    uri = log_constant_model(tracking_uri, 1.0)
    version = mlflow.register_model(uri, name)
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(name, version.version, "ctloop.metric.roc_auc", str(holdout_roc_auc))
    return str(version.version), version.run_id


def test_a_degraded_champion_raises_one_quality_event_and_the_sensor_admits_one_retrain(settings, kafka_bus,
                                                                                         tmp_path):
    from mlflow import MlflowClient

    model = f"churn-{uuid.uuid4().hex[:6]}"
    version, run_id = registered_version(settings.tracking_uri, model, holdout_roc_auc=0.9)
    retrain_uri = (tmp_path / "live").as_uri() + "/"
    save_spec(ModelSpec.model_validate({
        "name": model, "retrain_uri": retrain_uri,
        "data": {"features": [{"name": "x"}], "label": "churned", "key": "customer_id", "min_rows": 100},
        "quality": {"metric": "roc_auc", "min": 0.6, "max_drop": 0.05, "min_rows": 200, "window": "1h"},
    }), settings)

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, N)
    p1 = np.clip(0.5 + 0.15 * (y - 0.5) + rng.normal(0, 0.25, N), 0.01, 0.99)  # roc_auc ~0.66: under 0.9-0.05
    served = datetime.now(UTC) - timedelta(minutes=5)
    for b in range(0, N, 50):
        rows = [{"customer_id": i, "x": float(p1[i])} for i in range(b, b + 50)]
        kafka_bus.publish(settings.topics.predictions, PredictionBatch(
            model=model, version=version, rows=rows, predictions=[{"0": 1 - p, "1": p} for p in p1[b:b + 50]],
            ids=[f"p{i}" for i in range(b, b + 50)], ts=served).to_bytes())
    for i in rng.permutation(N):
        kafka_bus.publish(settings.topics.labels, to_bytes(new_event(
            LabelObserved(prediction_id=f"p{i}", label=int(y[i]), observed_at=served + timedelta(minutes=2)),
            id=f"l{i}")))
    kafka_bus.flush()

    service = outcomes_service(settings, kafka_bus, evaluate_every_s=3600)
    deadline = time.monotonic() + 60
    while service.store.counts(model).joined < N:
        assert time.monotonic() < deadline, f"{service.store.counts(model)}"
        service.step(0.2)
    first = service.evaluate()
    assert first is not None
    [quality] = first.quality
    expected = sk.roc_auc_score(y, p1)
    assert quality.live.metrics["roc_auc"] == pytest.approx(expected)
    assert quality.judgement is not None and quality.judgement.degraded
    assert quality.judgement.rule == "max_drop" and quality.judgement.threshold == pytest.approx(0.85)
    assert quality.event_id is not None
    # Judged again with no change: the episode is open, so no second event.
    assert service.evaluate(datetime.now(UTC)) is None
    assert service.quality.evaluate(service.specs()[0], datetime.now(UTC), window_s=3600)[0].event_id is None

    history = MlflowClient(settings.tracking_uri).get_metric_history(run_id, "live.roc_auc")
    assert [m.value for m in history] == [pytest.approx(expected)] * len(history) and history
    assert service.metrics.value("ctloop_live_quality", model=model, version=version,
                                 metric="roc_auc") == pytest.approx(expected)
    assert service.metrics.value("ctloop_quality_degraded_events_total", model=model) == 1
    [landed] = first.landed
    frame = pd.read_parquet(tmp_path / "live" / LANDED_OBJECT)
    assert landed.rows == N and list(frame.columns) == ["customer_id", "x", "churned"]
    assert sorted(zip(frame.customer_id, frame.churned, strict=True)) == [(i, int(y[i])) for i in range(N)]
    service.close()

    [raw] = kafka_bus.read_all(settings.topics.quality)
    event = parse(raw.value)
    assert isinstance(event.data, QualityDegraded) and event.id == quality.event_id
    assert (event.data.model, event.data.version, event.data.rows, event.data.data_uri) == (model, version, N,
                                                                                           retrain_uri)
    # A second degraded verdict within the cooldown (another version's) is held off like a drift verdict.
    now = datetime.now(UTC)
    again = QualityDegraded(model=model, version="2", metric="roc_auc", value=0.5, threshold=0.6, rule="min",
                            rows=250, window_start=now, window_end=now, data_uri=retrain_uri)
    kafka_bus.publish(settings.topics.quality, to_bytes(new_event(again, id="q-again")))
    kafka_bus.flush()
    engine = LedgerEngine(tmp_path / "runs.db")
    sensor = make_sensor(settings, kafka_bus, engine, policy=AdmissionPolicy(window_s=0, drift_cooldown_s=3600))
    deadline = time.monotonic() + 60
    while not list_decisions(settings.state_db, event_id="q-again"):
        assert time.monotonic() < deadline
        drain(sensor, timeout_s=0.2)
    sensor.close()
    [run] = engine.runs()
    assert (run["event_id"], run["trigger"], run["data_uri"], run["model"]) == (event.id, "quality", retrain_uri,
                                                                               model)
    [held_off] = list_decisions(settings.state_db, event_id="q-again")
    assert held_off.kind == "rejected" and "cooldown" in held_off.reason
    engine.close()

"""The joiner on the real Kafka broker: labels that arrive late and out of order join the predictions served,
each once; live quality per version is scikit-learn's on the same rows; bad labels are dead-lettered."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kafka import KafkaProducer
from sklearn import metrics as sk

from ctloop.deadletter import reason_of
from ctloop.events import DriftDetected, LabelObserved, new_event, to_bytes
from ctloop.monitors.joiner import Joiner
from ctloop.monitors.live_quality import live_quality
from ctloop.monitors.outcomes import CHAMPION, OutcomeStore
from ctloop.predictions import PredictionBatch
from ctloop.settings import Settings, Topics

pytestmark = pytest.mark.kafka
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HORIZON_S = 3600.0


@pytest.fixture
def settings(tmp_path, kafka_bootstrap):
    tag = uuid.uuid4().hex[:10]
    topics = Topics(predictions=f"pred-{tag}", labels=f"labels-{tag}", deadletter=f"dead-{tag}",
                    quality=f"quality-{tag}")
    return Settings(home=tmp_path, bus="kafka", kafka_bootstrap=kafka_bootstrap, topics=topics)


def label_event(pid: str | None, value: int, observed_at: datetime, *, key: str | None = None,
                event_id: str | None = None) -> bytes:
    payload = LabelObserved(prediction_id=pid, model="churn" if key else None, key=key, label=value,
                            observed_at=observed_at)
    return to_bytes(new_event(payload, id=event_id or f"label-{pid or key}"))


def served_traffic(rng: np.random.Generator, version: str, n: int, skill: float, start: int):
    """Batches of 20 rows served by `version`: labels, positive-class probabilities and ids."""
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + skill * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    ids = [f"v{version}-{i}" for i in range(n)]
    batches = []
    for b in range(0, n, 20):
        rows = [{"customer_id": start + i, "x": float(p1[i])} for i in range(b, min(b + 20, n))]
        batches.append(PredictionBatch(model="churn", version=version, rows=rows,
                                       predictions=[{"0": 1 - float(p), "1": float(p)} for p in p1[b:b + 20]],
                                       ids=ids[b:b + 20], ts=T0 + timedelta(seconds=b)))
    return y, p1, ids, batches


def drain(joiner: Joiner, expected: int, deadline_s: float = 60.0) -> None:
    deadline, seen = time.monotonic() + deadline_s, 0
    while seen < expected:
        assert time.monotonic() < deadline, f"joined {seen} of {expected} messages"
        seen += joiner.step(0.2)


def test_late_and_out_of_order_labels_join_once_and_live_quality_is_scikit_learn_s(settings, kafka_bus):
    rng = np.random.default_rng(16)
    good = served_traffic(rng, "1", 200, 0.6, 0)
    bad = served_traffic(rng, "2", 200, 0.1, 1000)
    labels = [(pid, int(y)) for traffic in (good, bad) for pid, y in zip(traffic[2], traffic[0], strict=True)]
    random.Random(16).shuffle(labels)
    early, later = labels[:150], labels[150:]
    observed = T0 + timedelta(minutes=30)
    # A third of the labels reach the broker before the predictions they name.
    for pid, y in early:
        kafka_bus.publish(settings.topics.labels, label_event(pid, y, observed))
    for batch in good[3] + bad[3]:
        kafka_bus.publish(settings.topics.predictions, batch.to_bytes(), key="churn")
    for pid, y in later:
        kafka_bus.publish(settings.topics.labels, label_event(pid, y, observed))
    # Delivered again (same event ids), and a label observed long after its prediction was served.
    for pid, y in later[:30]:
        kafka_bus.publish(settings.topics.labels, label_event(pid, y, observed))
    late_batch = PredictionBatch(model="churn", version="1", rows=[{"customer_id": 9, "x": 0.5}],
                                 predictions=[{"0": 0.5, "1": 0.5}], ids=["late-1"], ts=T0)
    kafka_bus.publish(settings.topics.predictions, late_batch.to_bytes())
    kafka_bus.publish(settings.topics.labels, label_event("late-1", 1, T0 + timedelta(hours=3)))
    # Labels by entity key: the newest prediction served to customer 1003 before the observation.
    kafka_bus.publish(settings.topics.labels, label_event(None, 1, observed, key="1003", event_id="by-key"))
    kafka_bus.flush()
    total = len(labels) + 30 + 2 + 1 + len(good[3]) + len(bad[3])

    store = OutcomeStore(f"sqlite:///{settings.home / 'outcomes.db'}")
    joiner = Joiner(kafka_bus, settings, store, key_column=lambda model: "customer_id", horizon_s=HORIZON_S)
    drain(joiner, total)
    joiner.close()

    states = store.label_states()
    assert len(states) == len(labels) + 2
    assert sum(s == "joined" for s in states.values()) == len(labels)
    assert states["label-late-1"] == "late"
    assert states["by-key"] == "duplicate"  # customer 1003's prediction already has its label
    for version, (y, p1, ids, _) in (("1", good), ("2", bad)):
        rows = store.joined("churn", version, since=T0, role=CHAMPION)
        assert sorted(r.prediction_id for r in rows) == sorted(ids)
        live = live_quality(rows, ["roc_auc", "accuracy", "log_loss"])
        assert live.n == 200
        assert live.metrics["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p1))
        assert live.metrics["accuracy"] == pytest.approx(sk.accuracy_score(y, (p1 > 0.5).astype(int)))
        assert live.metrics["log_loss"] == pytest.approx(sk.log_loss(y, np.c_[1 - p1, p1]))
    assert live_quality(store.joined("churn", "1", since=T0), ["roc_auc"]).metrics["roc_auc"] > 0.8
    assert live_quality(store.joined("churn", "2", since=T0), ["roc_auc"]).metrics["roc_auc"] < 0.75
    store.close()


def test_malformed_labels_go_to_the_dead_letter_topic_with_the_reason(settings, kafka_bus):
    now = datetime.now(UTC)
    drift = new_event(DriftDetected(model="churn", window_start=now, window_end=now, rows=1, drifted_share=0.0,
                                    dataset_drift=False, columns={}))
    no_target = json.dumps({"specversion": "1.0", "id": "l-x", "type": "ctloop.label.observed", "source": "t",
                            "data": {"label": 1, "observed_at": now.isoformat()}}).encode()
    bad = [b"not json", to_bytes(drift), no_target, b'{"model": "churn"}']
    for raw in bad:
        kafka_bus.publish(settings.topics.labels if raw != bad[-1] else settings.topics.predictions, raw)
    kafka_bus.publish(settings.topics.labels, label_event("p", 1, now))
    kafka_bus.flush()
    store = OutcomeStore(f"sqlite:///{settings.home / 'outcomes.db'}")
    joiner = Joiner(kafka_bus, settings, store, key_column=lambda model: None)
    drain(joiner, len(bad) + 1)
    joiner.close()
    reasons = sorted(reason_of(m) or "" for m in kafka_bus.read_all(settings.topics.deadletter))
    assert len(reasons) == 4
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("not a label: ctloop.drift.detected" in r for r in reasons)
    assert any("set prediction_id, or both model and key" in r for r in reasons)
    assert any(r.startswith("invalid prediction batch") for r in reasons)
    assert store.label_states() == {"label-p": "pending"}
    store.close()


def test_labels_in_batches_from_a_plain_kafka_producer_join_like_single_ones(settings, kafka_bus):
    """What a user's labelling pipeline writes with kafka-python and no ctloop code: one
    `ctloop.labels.observed` event carrying many labels, by prediction id or by entity key."""
    rng = np.random.default_rng(7)
    y, p1, ids, batches = served_traffic(rng, "1", 100, 0.6, 0)
    for batch in batches:
        kafka_bus.publish(settings.topics.predictions, batch.to_bytes(), key="churn")
    kafka_bus.flush()
    observed = (T0 + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    by_id = [{"prediction_id": pid, "label": int(v), "observed_at": observed} for pid, v in zip(ids[:99], y[:99],
                                                                                               strict=True)]
    by_key = [{"model": "churn", "key": "99", "label": int(y[99]), "observed_at": observed}]
    bad = [{"prediction_id": "v1-0", "label": 1, "observed_at": observed},
           {"prediction_id": "v1-1", "label": 1, "observed_at": "2026-11-01T00:30:00"}]  # no time zone
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    unkeyed = [by_id[0], {"model": "other", "key": "1", "label": 0, "observed_at": observed}]
    for event_id, labels in (("crm-1", by_id[:50]), ("crm-2", by_id[50:] + by_key), ("crm-1", by_id[:50]),
                             ("crm-3", bad), ("crm-4", unkeyed)):
        event = {"specversion": "1.0", "type": "ctloop.labels.observed", "id": event_id, "source": "urn:crm",
                 "time": observed, "data": {"labels": labels}}
        producer.send(settings.topics.labels, json.dumps(event).encode())
    producer.flush()
    producer.close()

    store = OutcomeStore(f"sqlite:///{settings.home / 'outcomes.db'}")
    joiner = Joiner(kafka_bus, settings, store, key_column=lambda model: "customer_id" if model == "churn" else None,
                    horizon_s=HORIZON_S)
    drain(joiner, len(batches) + 5)
    joiner.close()

    states = store.label_states()
    assert states == {**{f"crm-1#{i}": "joined" for i in range(50)},
                      **{f"crm-2#{i}": "joined" for i in range(50)}}  # the redelivered crm-1 counted once
    rows = store.joined("churn", "1", since=T0)
    assert {r.prediction_id: r.label for r in rows} == {pid: int(v) for pid, v in zip(ids, y, strict=True)}
    assert live_quality(rows, ["roc_auc"]).metrics["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p1))
    # A batch with one bad label is dead-lettered whole, its reason naming the label by its place.
    no_zone, no_key = [reason_of(m) or "" for m in kafka_bus.read_all(settings.topics.deadletter)]
    assert "invalid labels.1: " in no_zone and "time zone" in no_zone
    assert no_key.startswith("labels.1 names model 'other' by entity key") and "no data.key" in no_key
    store.close()


def test_what_a_crashed_joiner_had_stored_is_skipped_when_it_comes_again_and_a_resent_label_counts_once(settings,
                                                                                                      kafka_bus):
    """Offsets are stored with the writes: a consumer that gets the same messages again (here a new group, which
    starts from the beginning, as a restart after a crash restarts from the last commit) reads none of them."""
    rng = np.random.default_rng(3)
    y, _, ids, batches = served_traffic(rng, "1", 40, 0.6, 0)
    for batch in batches:
        kafka_bus.publish(settings.topics.predictions, batch.to_bytes(), key="churn")
    for pid, value in zip(ids, y, strict=True):
        kafka_bus.publish(settings.topics.labels, label_event(pid, int(value), T0 + timedelta(minutes=5)))
    kafka_bus.flush()
    store = OutcomeStore(f"sqlite:///{settings.home / 'outcomes.db'}")
    first = Joiner(kafka_bus, settings, store, key_column=lambda model: None, group="first")
    drain(first, len(batches) + len(ids))
    first.close()
    assert store.joined_count() == 40
    kafka_bus.publish(settings.topics.labels, label_event(ids[0], int(y[0]), T0 + timedelta(minutes=5)))
    kafka_bus.flush()
    second = Joiner(kafka_bus, settings, store, key_column=lambda model: None, group="second")
    drain(second, len(batches) + len(ids) + 1)
    second.close()
    assert (second.stats.rows, second.stats.labels) == (0, 1)  # only the resent label was read, and it counted once
    assert store.joined_count() == 40 and set(store.label_states().values()) == {"joined"}
    store.close()


def test_the_joiner_reads_what_names_a_row_and_leaves_feature_cells_to_the_monitor(settings, kafka_bus):
    """A batch wrong in what names or places its rows is dead-lettered with `parse_batch`'s reason; one malformed
    only in a feature cell the joiner never reads is stored and joins (the drift monitor dead-letters it)."""
    base = {"model": "churn", "version": "1", "columns": ["x", "y"], "ts": "2026-11-01T00:00:00Z"}
    ragged = {**base, "data": [[1.0, 2.0], [3.0], "x"], "predictions": [0, 1, 2], "ids": ["r-0", "r-1", "r-2"]}
    short = {**base, "data": [[1.0, 2.0], [3.0, 4.0]], "predictions": [0], "ids": ["s-0", "s-1"]}
    for doc in (ragged, short):
        kafka_bus.publish(settings.topics.predictions, json.dumps(doc).encode(), key="churn")
    for pid in ("r-1", "r-2", "s-0"):
        kafka_bus.publish(settings.topics.labels, label_event(pid, 1, T0 + timedelta(minutes=5)))
    kafka_bus.flush()
    store = OutcomeStore(f"sqlite:///{settings.home / 'outcomes.db'}")
    joiner = Joiner(kafka_bus, settings, store, key_column=lambda model: None)
    drain(joiner, 5)
    joiner.close()
    reasons = [reason_of(m) or "" for m in kafka_bus.read_all(settings.topics.deadletter)]
    assert reasons == ["invalid prediction batch at batch: Value error, 2 rows but 1 predictions"]
    assert store.label_states() == {"label-r-1": "joined", "label-r-2": "joined", "label-s-0": "pending"}
    joined = store.joined("churn", "1", since=T0)
    # Read back with the features they have, so that the quality monitor scores them.
    assert [(r.prediction_id, r.features, r.prediction) for r in joined] == [("r-1", {"x": 3.0}, 1), ("r-2", {}, 2)]
    store.close()

"""The outcome store and live quality: labels join their predictions whatever the order, once each; live metrics
are scikit-learn's on the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ctloop.modelspec import ModelSpec, QualityRule
from ctloop.monitors.live_quality import LiveQuality
from ctloop.monitors.outcomes import (
    CHAMPION,
    SHADOW,
    Label,
    OutcomeStore,
    OutcomeStoreError,
    ServedBatch,
)
from ctloop.monitors.quality import judge
from ctloop.predictions import PredictionBatch

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = 3600.0


@pytest.fixture
def store(tmp_path):
    store = OutcomeStore(f"sqlite:///{tmp_path / 'outcomes.db'}")
    yield store
    store.close()


def served(pid: str, *, version: str = "1", role: str = CHAMPION, entity: str | None = None, p1: float = 0.7,
           at: datetime = T0) -> ServedBatch:
    """A batch of one served row."""
    batch = PredictionBatch(model="churn", version=version, role=role, rows=[{"x": 1.0, "id": entity}],
                            predictions=[{"0": 1 - p1, "1": p1}], ids=[pid], ts=at)
    return ServedBatch.of(batch, key="id")


def label(lid: str, value: int, *, pid: str | None = None, entity: str | None = None,
          after_s: float = 60.0) -> Label:
    return Label(lid, value, T0 + timedelta(seconds=after_s), prediction_id=pid,
                 model="churn" if entity else None, entity=entity)


def test_a_label_that_arrives_before_its_prediction_waits_and_then_joins(store):
    store.add([], [label("l1", 1, pid="p1")], horizon_s=HOUR)
    assert (store.counts().pending, store.counts().joined) == (1, 0)
    store.add([served("p1")], [], horizon_s=HOUR)
    [row] = store.joined("churn", "1", since=T0)
    assert (row.prediction_id, row.label, row.prediction, row.role) == ("p1", 1, {"0": pytest.approx(0.3), "1": 0.7},
                                                                        CHAMPION)
    assert row.observed_at == T0 + timedelta(seconds=60) and row.served_at == T0
    assert store.counts().pending == 0


def test_redelivered_predictions_and_labels_are_stored_once(store):
    for _ in range(3):
        store.add([served("p1"), served("p2")], [label("l1", 1, pid="p1"), label("l2", 0, pid="p2")], horizon_s=HOUR)
    counts = store.counts()
    assert (counts.predictions, counts.joined, counts.duplicate, counts.pending) == (2, 2, 0, 0)
    assert store.label_states() == {"l1": "joined", "l2": "joined"}


def test_a_second_label_for_a_prediction_is_a_duplicate_and_the_first_stands(store):
    store.add([served("p1")], [label("l1", 1, pid="p1")], horizon_s=HOUR)
    store.add([], [label("l2", 0, pid="p1", after_s=90)], horizon_s=HOUR)
    [row] = store.joined("churn", None, since=T0)
    assert row.label == 1
    assert store.label_states() == {"l1": "joined", "l2": "duplicate"}


def test_a_label_after_the_horizon_is_kept_as_late_not_joined(store):
    store.add([served("p1")], [label("l1", 1, pid="p1", after_s=2 * HOUR)], horizon_s=HOUR)
    assert store.joined("churn", None, since=T0) == []
    assert store.label_states() == {"l1": "late"}
    assert store.counts().late == 1


def test_a_label_by_entity_key_joins_the_newest_champion_prediction_served_before_it(store):
    rows = [served("p-old", entity="42"), served("p-new", entity="42", at=T0 + timedelta(seconds=30)),
            served("p-after", entity="42", at=T0 + timedelta(seconds=120)), served("p-other", entity="7")]
    store.add(rows, [label("l1", 1, entity="42")], horizon_s=HOUR)
    [row] = store.joined("churn", None, since=T0)
    assert row.prediction_id == "p-new"


def test_a_shadow_row_of_the_same_request_joins_the_same_label_in_either_order(store):
    store.add([served("p1")], [label("l1", 1, pid="p1")], horizon_s=HOUR)
    store.add([served("p1", version="2", role=SHADOW, p1=0.2)], [], horizon_s=HOUR)
    store.add([served("p2", version="2", role=SHADOW)], [label("l2", 0, pid="p2")], horizon_s=HOUR)
    store.add([served("p2")], [], horizon_s=HOUR)
    store.add([served("p3"), served("p3", version="2", role=SHADOW)], [], horizon_s=HOUR)
    store.add([], [label("l3", 1, pid="p3")], horizon_s=HOUR)
    assert [(r.prediction_id, r.version, r.role) for r in store.joined("churn", None, since=T0)] == [
        ("p1", "1", CHAMPION), ("p1", "2", SHADOW), ("p2", "1", CHAMPION), ("p2", "2", SHADOW),
        ("p3", "1", CHAMPION), ("p3", "2", SHADOW)]
    assert [r.prediction_id for r in store.joined("churn", "2", since=T0, role=SHADOW)] == ["p1", "p2", "p3"]
    assert store.label_states() == {"l1": "joined", "l2": "joined", "l3": "joined"}


def test_joined_rows_are_read_by_version_role_and_time(store):
    rows = [served(f"p{i}", version=str(1 + i % 2), at=T0 + timedelta(minutes=i)) for i in range(6)]
    store.add(rows, [label(f"l{i}", i % 2, pid=f"p{i}", after_s=600) for i in range(6)], horizon_s=HOUR)
    assert [r.prediction_id for r in store.joined("churn", "1", since=T0)] == ["p0", "p2", "p4"]
    assert [r.prediction_id for r in store.joined("churn", None, since=T0 + timedelta(minutes=2),
                                                  until=T0 + timedelta(minutes=4))] == ["p2", "p3"]
    assert store.versions("churn", since=T0) == ["1", "2"]
    assert store.latest_version("churn", since=T0) == "2"
    assert store.joined("other", None, since=T0) == []


def test_the_store_outlives_its_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    first = OutcomeStore(url)
    first.add([served("p1")], [], horizon_s=HOUR)
    first.close()
    second = OutcomeStore(url)
    second.add([], [label("l1", 1, pid="p1")], horizon_s=HOUR)
    assert len(second.joined("churn", "1", since=T0)) == 1
    second.close()


def test_each_joined_row_reads_back_its_own_features_and_prediction_from_its_batch(store):
    batch = PredictionBatch(model="churn", version="3", rows=[{"x": float(i), "id": i} for i in range(5)],
                            predictions=[{"0": 1 - i / 10, "1": i / 10} for i in range(5)],
                            ids=[f"p{i}" for i in range(5)], ts=T0)
    store.add([ServedBatch.of(batch)], [label(f"l{i}", i % 2, pid=f"p{i}") for i in (4, 1, 3)], horizon_s=HOUR)
    rows = {r.prediction_id: r for r in store.joined("churn", "3", since=T0)}
    assert sorted(rows) == ["p1", "p3", "p4"]
    for i in (1, 3, 4):
        assert (rows[f"p{i}"].features, rows[f"p{i}"].prediction, rows[f"p{i}"].label) == (
            {"x": float(i), "id": i}, {"0": pytest.approx(1 - i / 10), "1": i / 10}, i % 2)
    assert store.counts().predictions == 5


def test_labels_of_one_poll_settle_in_arrival_order_and_a_repeated_id_counts_once(store):
    store.add([served("p1")], [label("l1", 1, pid="p1"), label("l1", 1, pid="p1"), label("l2", 0, pid="p1"),
                               label("l3", 1, pid="p2")], horizon_s=HOUR)
    assert store.label_states() == {"l1": "joined", "l2": "duplicate", "l3": "pending"}
    [row] = store.joined("churn", "1", since=T0)
    assert row.label == 1


def test_a_store_written_by_the_one_row_per_prediction_layout_is_refused_naming_what_to_do(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE predictions (prediction_id TEXT)")
    with pytest.raises(OutcomeStoreError, match=r"earlier ctloop.*move it aside"):
        OutcomeStore(f"sqlite:///{path}")


def test_an_unsupported_store_url_is_refused_with_the_form_to_use():
    with pytest.raises(OutcomeStoreError, match="sqlite:///<path>"):
        OutcomeStore("postgresql://db/outcomes")


def test_a_rule_is_judged_against_its_bound_or_the_holdout_figure_once_there_are_enough_rows():
    rule = QualityRule(metric="roc_auc", min=0.8, max_drop=0.03, min_rows=100)
    assert not judge(rule, LiveQuality(99, {"roc_auc": 0.5}), None).degraded
    low = judge(rule, LiveQuality(100, {"roc_auc": 0.79}), None)
    assert (low.degraded, low.rule, low.threshold) == (True, "min", 0.8)
    drop = judge(rule, LiveQuality(100, {"roc_auc": 0.85}), 0.9)
    assert (drop.degraded, drop.rule, drop.threshold) == (True, "max_drop", pytest.approx(0.87))
    assert not judge(rule, LiveQuality(100, {"roc_auc": 0.88}), 0.9).degraded
    loss = QualityRule(metric="log_loss", max_drop=0.1, min_rows=1)
    assert judge(loss, LiveQuality(5, {"log_loss": 0.5}), 0.3).degraded
    assert not judge(loss, LiveQuality(5, {"log_loss": 0.35}), 0.3).degraded


@pytest.mark.parametrize(("rule", "problem"), [
    ({"metric": "roc_auc"}, "needs min, max or max_drop"),
    ({"metric": "log_loss", "min": 0.1}, "better when lower"),
    ({"metric": "roc_auc", "max": 0.9}, "better when higher"),
    ({"metric": "roc_auc", "min": 0.8, "window": "soon"}, "not a duration"),
])
def test_a_bad_quality_rule_is_refused_naming_the_problem(rule, problem):
    with pytest.raises(ValueError, match=problem):
        QualityRule.model_validate(rule)


def test_a_spec_s_quality_rule_names_a_metric_live_quality_computes():
    data = {"features": [{"name": "x"}], "label": "y"}
    assert ModelSpec.model_validate({"name": "m", "data": data, "quality": {"metric": "roc_auc", "min": 0.8}})
    with pytest.raises(ValueError, match="never computes for a binary model"):
        ModelSpec.model_validate({"name": "m", "data": data, "quality": {"metric": "rmse", "max": 1.0}})


def keyed(key: str, n: int, *, version: str = "1", role: str = CHAMPION, at: datetime = T0,
          entities: list[str] | None = None) -> ServedBatch:
    """A batch of `n` rows named as serving names them, `<key>-<i>`."""
    batch = PredictionBatch(model="churn", version=version, role=role,
                            rows=[{"x": float(i), "id": entities[i] if entities else None} for i in range(n)],
                            predictions=[{"0": 0.5, "1": 0.5}] * n, ids=[f"{key}-{i}" for i in range(n)], ts=at)
    return ServedBatch.of(batch, key="id")


def test_a_batch_named_as_serving_names_it_is_indexed_by_its_key_and_its_rows_join_alike(store):
    store.add([keyed("a1", 3), keyed("a1", 3, version="2", role=SHADOW)],
              [label("l0", 1, pid="a1-0"), label("l2", 0, pid="a1-2"), label("l9", 1, pid="a1-9")], horizon_s=HOUR)
    rows = store.joined("churn", None, since=T0)
    assert [(r.prediction_id, r.role, r.features["x"]) for r in rows] == [
        ("a1-0", CHAMPION, 0.0), ("a1-0", SHADOW, 0.0), ("a1-2", CHAMPION, 2.0), ("a1-2", SHADOW, 2.0)]
    assert store.label_states() == {"l0": "joined", "l2": "joined", "l9": "pending"}  # a1 has no row 9
    assert store.counts().predictions == 6


def test_what_memory_no_longer_holds_is_found_in_the_file_and_still_counts_once(tmp_path):
    store = OutcomeStore(f"sqlite:///{tmp_path / 'o.db'}", memory_rows=4)
    store.add([keyed("old", 2), served("p-old", entity="7")], [label("l0", 1, pid="old-0")], horizon_s=HOUR)
    store.add([keyed(f"k{i}", 2, at=T0 + timedelta(seconds=i)) for i in range(5)], [], horizon_s=HOUR)
    # "old" and "p-old" left memory: a label for them, the same label sent again, a batch sent again.
    store.add([keyed("old", 2), served("p-old", entity="7")],
              [label("l0", 1, pid="old-0"), label("l1", 0, pid="old-1"), label("l2", 1, pid="old-0"),
               label("l3", 1, entity="7")], horizon_s=HOUR)
    assert store.label_states() == {"l0": "joined", "l1": "joined", "l2": "duplicate", "l3": "joined"}
    assert sorted(r.prediction_id for r in store.joined("churn", None, since=T0)) == ["old-0", "old-1", "p-old"]
    assert store.counts().predictions == 13
    store.add([keyed("old", 2, version="2", role=SHADOW)], [label("l1", 0, pid="old-1")], horizon_s=HOUR)
    assert [r.prediction_id for r in store.joined("churn", "2", since=T0, role=SHADOW)] == ["old-0", "old-1"]
    assert store.joined_count() == 5
    store.close()


def test_a_restarted_writer_rebuilds_its_memory_from_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    first = OutcomeStore(url)
    first.add([keyed("a", 2), served("p1", entity="42")],
              [label("l0", 1, pid="a-0"), label("l5", 1, pid="b-0"), label("l6", 0, entity="9")], horizon_s=HOUR,
              offsets={("labels", 0): 41, ("predictions", 2): 7})
    first.close()
    second = OutcomeStore(url)
    assert second.offsets() == {("labels", 0): 41, ("predictions", 2): 7}
    # Sent again after the restart: counted once; the pending ones join when their predictions come.
    second.add([keyed("b", 1), keyed("a", 2, version="2", role=SHADOW), served("p9", entity="9")],
               [label("l0", 1, pid="a-0"), label("l7", 1, entity="42")], horizon_s=HOUR)
    assert second.label_states() == {"l0": "joined", "l5": "joined", "l6": "joined", "l7": "joined"}
    assert [(r.prediction_id, r.role) for r in second.joined("churn", None, since=T0)] == [
        ("a-0", CHAMPION), ("a-0", SHADOW), ("b-0", CHAMPION), ("p1", CHAMPION), ("p9", CHAMPION)]
    assert (second.joined_count(), second.counts().pending) == (5, 0)
    second.close()


def test_ids_in_serving_s_form_are_told_apart_from_others():
    from ctloop.monitors.outcomes import batch_key

    assert batch_key([f"{'ab' * 16}-{i}" for i in range(3)]) == "ab" * 16
    assert batch_key(["k-0", "k-1", "k-1"]) is None
    assert batch_key(["k-1", "k-2"]) is None  # a later slice of a batch: its rows are not 0 ..
    assert batch_key(["p1"]) is None
    assert batch_key([]) is None


def test_a_label_by_entity_key_finds_a_prediction_memory_no_longer_holds_in_the_file(tmp_path):
    store = OutcomeStore(f"sqlite:///{tmp_path / 'o.db'}", memory_rows=2)
    store.add([keyed("a", 2, entities=["41", "42"]), served("p-7", entity="7")], [], horizon_s=HOUR)
    store.add([keyed(f"k{i}", 2) for i in range(3)], [], horizon_s=HOUR)
    store.add([], [label("l1", 1, entity="42"), label("l2", 0, entity="7"), label("l3", 1, entity="404")],
              horizon_s=HOUR)
    assert sorted(r.prediction_id for r in store.joined("churn", None, since=T0)) == ["a-1", "p-7"]
    assert store.label_states() == {"l1": "joined", "l2": "joined", "l3": "pending"}
    store.close()


def test_a_columnar_batch_joins_by_its_key_column_and_reads_back_its_rows_as_dicts(store):
    """Serving logs columns and lists (`ctloop.predictions`); the key column and the features come from them."""
    batch = PredictionBatch(model="churn", version="3", columns=["x", "id"],
                            data=[[float(i), str(i)] for i in range(4)],
                            predictions=[{"0": 1 - i / 10, "1": i / 10} for i in range(4)],
                            ids=[f"p{i}" for i in range(4)], ts=T0)
    store.add([ServedBatch.of(batch, key="id")], [label("l1", 1, entity="2"), label("l2", 0, pid="p3")],
              horizon_s=HOUR)
    rows = {r.prediction_id: r for r in store.joined("churn", "3", since=T0)}
    assert {pid: (r.features, r.label) for pid, r in rows.items()} == {
        "p2": ({"x": 2.0, "id": "2"}, 1), "p3": ({"x": 3.0, "id": "3"}, 0)}


def test_labels_by_entity_key_join_rows_of_a_batch_named_as_serving_names_it_in_both_roles(store):
    entities = ["a", "b", "c", "d"]
    store.add([keyed("k", 4, entities=entities), keyed("k", 4, version="2", role=SHADOW, entities=entities)],
              [label("l-b", 1, entity="b"), label("l-b2", 0, entity="b"), label("l-d", 0, entity="d", after_s=2 * HOUR),
               label("l-z", 1, entity="z"), label("l-c", 1, entity="c", after_s=-60)], horizon_s=HOUR)
    rows = store.joined("churn", None, since=T0)
    assert [(r.prediction_id, r.role, r.features["id"], r.label) for r in rows] == [
        ("k-1", CHAMPION, "b", 1), ("k-1", SHADOW, "b", 1)]
    # A second label for b is a duplicate, d's came after the horizon, z has no prediction, c's was observed
    # before c was served: both wait.
    assert store.label_states() == {"l-b": "joined", "l-b2": "duplicate", "l-d": "late", "l-z": "pending",
                                    "l-c": "pending"}
    assert store.counts().joined == 2

"""GatewayStore: state per model round-trips, ownership fences a replica that lost a partition, GPU runs count
over replicas; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from ctloop.sensors.admission import AdmissionState, Candidate, Decision, Slot, Window
from ctloop.sensors.gateway.store import DeadLetterRows, Fenced, GatewayStore, changed_models, part


def cand(model: str, digest: str, *, gpu: bool = False) -> Candidate:
    return Candidate(event_id=f"e-{model}-{digest}", model=model, key=f"k-{model}-{digest}", uri=f"file:///{digest}",
                     digest=digest, trigger="data", gpu=gpu, event_time=1.0)


def test_each_models_state_comes_back_to_the_replica_that_claims_its_partition(store_url):
    a = GatewayStore(store_url, "a")
    a.claim([0, 1])
    state = AdmissionState(windows={"m1": Window(candidate=cand("m1", "d2"), due_at=5.0)},
                           queued={"m0": cand("m0", "d1")},
                           running={"m0": Slot(candidate=cand("m0", "d0", gpu=True), run_id="r0", started_at=2.0)},
                           last_drift_at={"m0": 3.0})
    with a.transaction() as writer:
        writer.fence({0, 1})
        writer.save({"m0": (0, part(state, "m0")), "m1": (1, part(state, "m1"))})
    b = GatewayStore(store_url, "b")
    loaded, where = b.claim([0])
    assert where == {"m0": 0}
    assert loaded.queued == state.queued and loaded.running == state.running
    assert loaded.last_drift_at == {"m0": 3.0} and loaded.windows == {}
    a.close(), b.close()


def test_a_replica_that_lost_a_partition_cannot_write_for_it(store_url):
    a, b = GatewayStore(store_url, "a"), GatewayStore(store_url, "b")
    a.claim([0])
    b.claim([0])  # a rebalance gave partition 0 to b; a has not noticed yet
    with pytest.raises(Fenced, match=r"partitions \[0\]"), a.transaction() as writer:
        writer.fence({0})
        writer.record([Decision("triggered", "late", cand("m0", "d0"))], 1.0)
    assert a.decisions() == [] and a.owned == frozenset()
    with b.transaction() as writer:
        writer.fence({0})
        writer.record([Decision("triggered", "owner", cand("m0", "d0"))], 1.0)
    assert [d.reason for d in b.decisions(model="m0")] == ["owner"]
    a.close(), b.close()


def test_gpu_runs_of_other_replicas_models_are_counted(store_url):
    a, b = GatewayStore(store_url, "a"), GatewayStore(store_url, "b")
    a.claim([0])
    b.claim([1])
    gpu_run = AdmissionState(running={"m0": Slot(candidate=cand("m0", "d0", gpu=True), run_id="r", started_at=1.0)})
    with a.transaction(gpu=True) as writer:
        writer.fence({0})
        writer.save({"m0": (0, part(gpu_run, "m0"))})
    with b.transaction(gpu=True) as writer:
        assert writer.foreign_gpu_runs({"m1"}) == 1
        assert writer.foreign_gpu_runs({"m0"}) == 0
    a.close(), b.close()


def test_events_and_keys_are_remembered_once(store_url):
    a = GatewayStore(store_url, "a")
    a.claim([0])
    with a.transaction() as writer:
        writer.mark_seen({"e1": "body1", "e2": "body2"}, 1.0)
        writer.mark_ran([cand("m0", "d0"), cand("m0", "d0")], 1.0)
    with a.transaction() as writer:
        writer.mark_seen({"e1": "other", "e3": "body3"}, 2.0)  # a redelivery after a crash writes again
        writer.mark_ran([cand("m0", "d0")], 2.0)
    assert a.seen({"e1", "e3", "e4"}) == {"e1": "body1", "e3": "body3"}, "the first body's digest is kept"
    assert a.ran({"k-m0-d0", "k-m0-d1"}) == {"k-m0-d0"}
    a.close()


def test_only_changed_models_are_written():
    before = AdmissionState(queued={"m0": cand("m0", "d0"), "m1": cand("m1", "d0")})
    after = before.model_copy(update={"queued": {"m0": before.queued["m0"], "m1": cand("m1", "d1")}})
    assert changed_models(before, after) == {"m1"}
    assert part(AdmissionState(), "m0") is None


def test_a_store_from_before_request_digests_gains_the_column_and_reads_old_events_as_digestless(store_url):
    import sqlalchemy as sa

    old = sa.create_engine(store_url)
    with old.begin() as db:
        db.exec_driver_sql("CREATE TABLE gateway_events (event_id VARCHAR(400) PRIMARY KEY, at FLOAT NOT NULL)")
        db.exec_driver_sql("INSERT INTO gateway_events VALUES ('e-old', 1.0)")
    old.dispose()
    a = GatewayStore(store_url, "a")
    GatewayStore(store_url, "b").close()  # a second replica's start finds the column there
    with a.transaction() as writer:
        writer.mark_seen({"e-new": "body"}, 2.0)
    assert a.seen({"e-old", "e-new"}) == {"e-old": "", "e-new": "body"}
    a.close()


def test_a_dead_letter_is_claimed_once_by_the_partitions_owner_and_its_next_owner_resolves_it(store_url):
    a, b = GatewayStore(store_url, "a"), GatewayStore(store_url, "b")
    a.claim([0, 1])
    rows_a = DeadLetterRows(a, "adm")
    assert rows_a.claim(("adm", 0, 7), "bad") is True
    assert rows_a.claim(("adm", 0, 7), "bad") is False, "a message that comes again is not copied again"
    assert rows_a.claim(("adm", 1, 3), "bad") is True
    rows_a.mark_sent(("adm", 1, 3))
    b.claim([0])  # a's partition 0 moves to b while a's copy of (0, 7) may not have been sent
    with pytest.raises(Fenced):
        rows_a.claim(("adm", 0, 8), "bad")
    rows_b = DeadLetterRows(b, "adm")
    assert rows_b.pending() == [("adm", 0, 7)], "only the pending records of b's own partitions"
    rows_b.resolve([], [("adm", 0, 7)])  # not found on the dead-letter topic: forgotten, so it is copied again
    assert rows_b.pending() == [] and rows_b.claim(("adm", 0, 7), "bad") is True
    a.close()
    b.close()

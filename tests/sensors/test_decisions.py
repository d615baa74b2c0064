"""The decision log: a model's burst queued and replaced within one batch is stored as one row, and read back
(by the log, `list_decisions` and the `sensor_decisions` view) as every decision it made, in order."""

from __future__ import annotations

import sqlite3

from ctloop.sensors.admission import AdmissionPolicy, AdmissionState, Candidate, Decision, admit_all, started
from ctloop.sensors.local.decisions import DecisionLog, list_decisions

POLICY = AdmissionPolicy(window_s=0)


def candidate(n: int, model: str = "churn") -> Candidate:
    return Candidate(event_id=f"ev-{n}", model=model, key=f"k{n}", uri=f"s3://d/{n}", digest=f"d{n}",
                     trigger="data", event_time=float(n))


def burst(db, count: int) -> tuple[DecisionLog, list]:
    """`count` arrivals for one busy model decided in one batch and written in one transaction."""
    log = DecisionLog(db, "ctloop-sensor")
    state = started(admit_all(AdmissionState(), [candidate(0)], ran=set(), now=0.0, policy=POLICY).state,
                    "churn", "run-0")
    outcome = admit_all(state, [candidate(n) for n in range(1, count + 1)], ran=set(), now=1.0, policy=POLICY)
    with log.transaction():
        log.record(((d, None) for d in outcome.decisions), at=1.0)
    return log, list(outcome.decisions)


def test_a_burst_reads_back_as_every_decision_admission_made_in_order(tmp_path):
    log, decided = burst(tmp_path / "state.db", 4)
    assert [(d.kind, d.candidate.event_id) for d in decided] == [
        ("deferred", "ev-1"), ("coalesced", "ev-1"), ("deferred", "ev-2"), ("coalesced", "ev-2"),
        ("deferred", "ev-3"), ("coalesced", "ev-3"), ("deferred", "ev-4")]
    read = list(log.decisions())
    per_event = {}
    for row in read:
        per_event.setdefault(row.event_id, []).append((row.kind, row.reason, row.key))
    assert per_event == {
        f"ev-{n}": [("deferred", "churn has a run in progress; queued (latest only)", f"k{n}"),
                    ("coalesced", f"queued run replaced by newer ev-{n + 1}", f"k{n}")] for n in (1, 2, 3)
    } | {"ev-4": [("deferred", "churn has a run in progress; queued (latest only)", "k4")]}
    log.close()


def test_a_batch_takes_one_stored_row_and_the_view_still_shows_a_row_per_event(tmp_path):
    log, _ = burst(tmp_path / "state.db", 4)
    with log.transaction():
        log.record_rejections([("ev-9", "churn", "filtered"), ("ev-10", None, "no sensor")], at=2.0)
    log.mark_seen({f"ev-{n}": "" for n in range(1, 5)}, at=1.0)
    log.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM sensor_decision_rows").fetchone() == (0,)
        assert db.execute("SELECT at FROM sensor_decision_batches ORDER BY seq").fetchall() == [(1.0,), (2.0,)]
        viewed = db.execute("SELECT event_id, model, kind, key, deferred IS NOT NULL FROM sensor_decisions"
                            " ORDER BY seq, event_id")
        assert viewed.fetchall() == [("ev-1", "churn", "coalesced", "k1", 1), ("ev-2", "churn", "coalesced", "k2", 1),
                                     ("ev-3", "churn", "coalesced", "k3", 1), ("ev-4", "churn", "deferred", "k4", 0),
                                     ("ev-10", None, "rejected", None, 0), ("ev-9", "churn", "rejected", None, 0)]


def test_an_event_in_a_burst_is_found_by_its_id_and_by_a_prefix(tmp_path):
    db = tmp_path / "state.db"
    burst(db, 4)[0].close()  # another model's burst first
    log = DecisionLog(db, "ctloop-sensor")
    with log.transaction():
        log.record(((d, None) for d in burst_decisions(["x-1", "x-2", "x-3"])), at=2.0)
        log.mark_seen({"x-1": "", "x-2": "", "x-3": ""}, at=2.0)
    log.close()
    assert [(r.event_id, r.kind) for r in list_decisions(db, event_id="x-2")] == [("x-2", "coalesced"),
                                                                                  ("x-2", "deferred")]
    assert [(r.event_id, r.kind) for r in list_decisions(db, event_prefix="x-", limit=10)] == [
        ("x-3", "deferred"), ("x-2", "coalesced"), ("x-2", "deferred"), ("x-1", "coalesced"), ("x-1", "deferred")]
    assert [r.event_id for r in list_decisions(db, model="other", limit=100)] == ["x-3", "x-2", "x-2", "x-1", "x-1"]
    assert list_decisions(db, event_id="x-") == [], "an id is matched whole, not as the start of another"


def test_an_event_id_that_json_escapes_is_found_in_a_burst(tmp_path):
    db = tmp_path / "state.db"
    ids = ['q"1', "q\\2", "q\u00e93"]
    log = DecisionLog(db, "ctloop-sensor")
    with log.transaction():
        log.record(((d, None) for d in burst_decisions(ids)), at=2.0)
    log.close()
    assert [r.kind for r in list_decisions(db, event_id=ids[1])] == ["coalesced", "deferred"]
    assert {r.event_id for r in list_decisions(db, event_prefix='q"')} == {ids[0]}


def burst_decisions(event_ids: list[str]) -> list:
    """Admission's decisions for arrivals of a busy model `other`: all but the last deferred, then coalesced."""
    state = started(admit_all(AdmissionState(), [candidate(0, "other")], ran=set(), now=0.0, policy=POLICY).state,
                    "other", "run-0")
    arrivals = [Candidate(event_id=e, model="other", key=f"k-{e}", uri="s3://d", digest=e, trigger="data",
                          event_time=1.0) for e in event_ids]
    return list(admit_all(state, arrivals, ran=set(), now=1.0, policy=POLICY).decisions)


def test_events_list_shows_a_burst_event_newest_decision_first(tmp_path):
    burst(tmp_path / "state.db", 2)[0].close()
    rows = list_decisions(tmp_path / "state.db", event_id="ev-1")
    assert [(r.kind, r.reason) for r in rows] == [
        ("coalesced", "queued run replaced by newer ev-2"),
        ("deferred", "churn has a run in progress; queued (latest only)")]
    assert [r.kind for r in list_decisions(tmp_path / "state.db", limit=2)] == ["deferred", "coalesced"]


def test_a_log_written_before_burst_rows_opens_and_reads_as_before(tmp_path):
    db_path = tmp_path / "state.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE sensor_decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL,"
                   " at REAL NOT NULL, event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL,"
                   " key TEXT, run_id TEXT, latency_ms REAL)")
        db.execute("INSERT INTO sensor_decisions (sensor, at, event_id, model, kind, reason) VALUES"
                   " ('ctloop-sensor', 1.0, 'old-1', 'churn', 'rejected', 'filtered')")
    [old] = list_decisions(db_path, event_id="old-1")
    assert (old.kind, old.reason) == ("rejected", "filtered")
    log, _ = burst(db_path, 2)
    assert [(d.event_id, d.kind) for d in log.decisions()] == [
        ("old-1", "rejected"), ("ev-1", "deferred"), ("ev-1", "coalesced"), ("ev-2", "deferred")]
    log.close()


def test_a_log_written_before_bursts_takes_them_and_finds_their_events(tmp_path):
    db_path = tmp_path / "state.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE sensor_events (sensor TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,"
                   " digest TEXT, PRIMARY KEY (sensor, event_id))")
        db.execute("CREATE TABLE sensor_decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL,"
                   " at REAL NOT NULL, event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL,"
                   " key TEXT, run_id TEXT, latency_ms REAL, deferred TEXT)")
        db.execute("INSERT INTO sensor_events VALUES ('ctloop-sensor', 'old-1', 1.0, 'abc')")
        db.execute("INSERT INTO sensor_decisions (sensor, at, event_id, model, kind, reason) VALUES"
                   " ('ctloop-sensor', 1.0, 'old-1', 'churn', 'rejected', 'filtered')")
    log = DecisionLog(db_path, "ctloop-sensor")
    assert log.recent_digests(10) == {"old-1": "abc"}
    with log.transaction():
        log.record(((d, None) for d in burst_decisions(["x-1", "x-2", "x-3"])), at=2.0)
        log.mark_seen({"x-1": "", "x-2": "", "x-3": ""}, at=2.0)
    assert [(d.event_id, d.kind) for d in log.decisions()] == [
        ("old-1", "rejected"), ("x-1", "deferred"), ("x-1", "coalesced"), ("x-2", "deferred"), ("x-2", "coalesced"),
        ("x-3", "deferred")]
    log.close()
    assert [r.kind for r in list_decisions(db_path, event_id="x-1")] == ["coalesced", "deferred"]
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM sensor_decisions").fetchone() == (4,)


def test_a_log_with_a_row_per_seen_event_is_folded_into_a_row_per_batch_and_keeps_its_bursts_findable(tmp_path):
    db_path = tmp_path / "state.db"
    log, _ = burst(db_path, 3)
    log.close()
    with sqlite3.connect(db_path) as db:  # the round-4 layout: a seen row per event naming its burst row
        db.execute("DROP VIEW sensor_events")
        db.execute("DROP TABLE sensor_seen")
        db.execute("CREATE TABLE sensor_events (event_id TEXT NOT NULL, sensor TEXT NOT NULL, at REAL NOT NULL,"
                   " digest TEXT, burst INTEGER, PRIMARY KEY (event_id, sensor)) WITHOUT ROWID")
        db.executemany("INSERT INTO sensor_events VALUES (?, 'ctloop-sensor', ?, ?, 1)",
                       [("ev-1", 1.0, "a"), ("ev-2", 1.0, "b"), ("ev-3", 2.0, "c")])
    log = DecisionLog(db_path, "ctloop-sensor")
    assert log.recent_digests(10) == {"ev-1": "a", "ev-2": "b", "ev-3": "c"}
    assert log.recent_digests(1) == {"ev-3": "c"}, "the newest batches first, whole"
    assert log.seen("ev-2") and not log.seen("ev-4")
    log.close()
    assert [r.kind for r in list_decisions(db_path, event_id="ev-2")] == ["coalesced", "deferred"]
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM sensor_seen").fetchone() == (2,)
        assert db.execute("SELECT COUNT(*) FROM sensor_events").fetchone() == (3,)


def test_watermarks_only_rise_and_are_kept_per_sensor_group(tmp_path):
    log, other = DecisionLog(tmp_path / "state.db", "g1"), DecisionLog(tmp_path / "state.db", "g2")
    with log.transaction():
        log.advance({("t", 0): 10, ("t", 1): 3})
    with log.transaction():
        log.advance({("t", 0): 7, ("u", 0): 0})
    assert log.watermarks() == {("t", 0): 10, ("t", 1): 3, ("u", 0): 0}
    assert other.watermarks() == {}
    log.close()
    other.close()


def test_recent_digests_are_the_newest_batches_oldest_first(tmp_path):
    log = DecisionLog(tmp_path / "state.db", "ctloop-sensor")
    for n in range(5):
        with log.transaction():
            log.mark_seen({f"e{n}a": f"d{n}", f"e{n}b": ""}, at=float(n))
    assert list(log.recent_digests(3)) == ["e3a", "e3b", "e4a", "e4b"]
    assert len(log.recent_digests(100)) == 10
    log.close()


def test_an_id_only_json_can_write_is_rebuilt_too(tmp_path):
    log = DecisionLog(tmp_path / "state.db", "ctloop-sensor")
    with log.transaction():
        log.mark_seen({"ev-\udc80": "d", "ev-2": ""}, at=1.0)
    assert log.recent_digests(10) == {"ev-\udc80": "d", "ev-2": ""}
    log.close()


def test_keys_that_ran_are_those_any_group_started_a_run_on_and_no_other(tmp_path):
    log, other = DecisionLog(tmp_path / "state.db", "g1"), DecisionLog(tmp_path / "state.db", "g2")
    quoted = Candidate(event_id="ev-q", model="churn", key='k "q" \\', uri="s3://d/q", digest="dq", trigger="data",
                       event_time=0.0)
    with log.transaction():
        log.record([(Decision("triggered", "run r1 submitted", candidate(1), run_id="r1"), 1.0),
                    (Decision("deferred", "queued", candidate(2)), None)], at=1.0)
    with other.transaction():
        other.record([(Decision("triggered", "run r3 submitted", quoted, run_id="r3"), 1.0)], at=1.0)
    asked = ["k1", "k2", 'k "q" \\', "k9", "ev-\udc80"]
    assert log.ran(asked) == other.ran(asked) == {"k1", 'k "q" \\'}
    assert log.ran([]) == set()
    log.close()
    other.close()


def triggered(n: int, run_id: str) -> tuple[Decision, float]:
    return Decision("triggered", f"run {run_id} submitted", candidate(n), run_id=run_id), 0.0125


def test_a_key_another_process_records_after_a_first_look_is_seen_on_the_next(tmp_path):
    log, other = DecisionLog(tmp_path / "state.db", "g"), DecisionLog(tmp_path / "state.db", "g")
    assert log.ran(["k1", "k2"]) == set()
    with other.transaction():
        other.record([triggered(1, "r1")], at=1.0)
    assert log.ran(["k1", "k2"]) == {"k1"}
    with other.transaction():
        other.record([triggered(2, "r2")], at=2.0)
    assert log.ran(["k1", "k2", "k3"]) == {"k1", "k2"}, "the keys read before are kept, the newer read"
    log.close()
    other.close()


def test_a_run_whose_transaction_rolled_back_never_counts_as_ran_even_when_its_seq_is_given_again(tmp_path):
    log, other = DecisionLog(tmp_path / "state.db", "g"), DecisionLog(tmp_path / "state.db", "g")
    try:
        with log.transaction():
            log.record([triggered(1, "r1")], at=1.0)
            assert log.ran(["k1"]) == {"k1"}, "inside its transaction a run is seen, as the table showed it"
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert log.ran(["k1"]) == set()
    with other.transaction():
        other.record([triggered(2, "r2")], at=2.0)  # the seq the rolled-back row had
    assert log.ran(["k1", "k2"]) == {"k2"}
    log.close()
    other.close()


def test_a_latency_is_given_in_seconds_and_read_back_in_ms_and_sensor_runs_has_a_row_per_key(tmp_path):
    log = DecisionLog(tmp_path / "state.db", "g")
    refused = Decision("deduped", "engine refused: key already ran (r1)", candidate(1), run_id="r1")
    with log.transaction():
        log.record([triggered(1, "r1"), (refused, 0.5)], at=1.0)
    with log.transaction():
        log.record([triggered(3, "r3")], at=2.0)
    assert [(d.kind, d.latency_ms) for d in log.decisions()] == [("triggered", 12.5), ("deduped", 500.0),
                                                                 ("triggered", 12.5)]
    log.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT * FROM sensor_runs ORDER BY key").fetchall() == [
            ("k1", "g", "churn", "ev-1", "r1", 1.0), ("k3", "g", "churn", "ev-3", "r3", 2.0)]


def test_only_a_coalesced_decision_next_after_a_deferred_one_merges_with_it(tmp_path):
    log, one, two = DecisionLog(tmp_path / "state.db", "g"), candidate(1), candidate(2)
    with log.transaction():
        log.record([(Decision("deferred", "window", one), None), (Decision("deferred", "queued", one), None),
                    (Decision("coalesced", "replaced", one), None),
                    (Decision("deferred", "queued", two), None), (Decision("triggered", "run r2", two, "r2"), None),
                    (Decision("coalesced", "replaced", two), None)], at=1.0)
    assert [(d.event_id, d.kind, d.reason) for d in log.decisions()] == [
        ("ev-1", "deferred", "window"), ("ev-1", "deferred", "queued"), ("ev-1", "coalesced", "replaced"),
        ("ev-2", "deferred", "queued"), ("ev-2", "triggered", "run r2"), ("ev-2", "coalesced", "replaced")]
    log.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT json_array_length(decisions) FROM sensor_decision_batches").fetchone() == (5,)


# The layout before packing (round 5): a row per decision, a merged deferred+coalesced row, a row per burst.
ROUND_5 = """
CREATE TABLE sensor_seen (seq INTEGER PRIMARY KEY, sensor TEXT NOT NULL, at REAL NOT NULL, events TEXT NOT NULL);
CREATE VIEW sensor_events AS
    SELECT s.sensor, e.key AS event_id, s.at, e.value AS digest FROM sensor_seen s, json_each(s.events) e;
CREATE TABLE sensor_offsets (sensor TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, PRIMARY KEY (sensor, topic, partition)) WITHOUT ROWID;
CREATE TABLE sensor_decision_rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, at REAL NOT NULL,
    event_id TEXT NOT NULL, model TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL, key TEXT, run_id TEXT,
    latency_ms REAL, deferred TEXT, burst TEXT);
CREATE INDEX sensor_decisions_event ON sensor_decision_rows (event_id);
CREATE INDEX sensor_decisions_bursts ON sensor_decision_rows (seq) WHERE burst IS NOT NULL;
CREATE VIEW sensor_decisions AS
    SELECT seq, sensor, at, event_id, model, kind, reason, key, run_id, latency_ms, deferred
    FROM sensor_decision_rows WHERE burst IS NULL
    UNION ALL
    SELECT r.seq, r.sensor, r.at, m.value ->> 0, r.model, 'coalesced', m.value ->> 3, m.value ->> 1, NULL, NULL,
           m.value ->> 2
    FROM sensor_decision_rows r, json_each(r.burst) m WHERE r.burst IS NOT NULL;
CREATE TABLE sensor_runs (key TEXT PRIMARY KEY, sensor TEXT NOT NULL, model TEXT NOT NULL, event_id TEXT NOT NULL,
    run_id TEXT, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE sensor_state (sensor TEXT PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO sensor_decision_rows (sensor, at, event_id, model, kind, reason, key, run_id, latency_ms) VALUES
    ('ctloop-sensor', 1.0, 'r5-1', 'churn', 'triggered', 'run run-1 submitted', 'k-r5-1', 'run-1', 12.5);
INSERT INTO sensor_decision_rows (sensor, at, event_id, model, kind, reason, key, deferred) VALUES
    ('ctloop-sensor', 1.0, 'r5-2', 'fraud', 'coalesced', 'queued run replaced by newer r5-9', 'k-r5-2', 'queued');
INSERT INTO sensor_decision_rows (sensor, at, event_id, model, kind, reason, burst) VALUES
    ('ctloop-sensor', 1.0, 'r5-3', 'churn', 'coalesced', '2 events coalesced',
     '[["r5-3","k-r5-3","queued","replaced by r5-4"],["r5-4","k-r5-4","queued","replaced by r5-5"]]');
INSERT INTO sensor_runs VALUES ('k-r5-1', 'ctloop-sensor', 'churn', 'r5-1', 'run-1', 1.0);
"""
ROUND_5_DECISIONS = [
    ("r5-1", "triggered", "run run-1 submitted", "run-1", 12.5), ("r5-2", "deferred", "queued", None, None),
    ("r5-2", "coalesced", "queued run replaced by newer r5-9", None, None), ("r5-3", "deferred", "queued", None, None),
    ("r5-3", "coalesced", "replaced by r5-4", None, None), ("r5-4", "deferred", "queued", None, None),
    ("r5-4", "coalesced", "replaced by r5-5", None, None)]


def test_a_log_written_before_packing_reads_as_before_and_its_new_batches_follow_it(tmp_path):
    db_path = tmp_path / "state.db"
    with sqlite3.connect(db_path) as db:
        db.executescript(ROUND_5)
    read = [(d.event_id, d.kind, d.reason, d.run_id, d.latency_ms) for d in list_decisions(db_path, limit=100)]
    assert read == ROUND_5_DECISIONS[::-1]
    log = DecisionLog(db_path, "ctloop-sensor")
    assert log.ran(["k-r5-1", "k-r5-3"]) == {"k-r5-1"}
    with log.transaction():
        log.record_rejections([("new-1", "churn", "filtered")], at=2.0)
    assert [(d.event_id, d.kind, d.reason, d.run_id, d.latency_ms) for d in log.decisions()] == [
        *ROUND_5_DECISIONS, ("new-1", "rejected", "filtered", None, None)]
    log.close()
    assert [r.kind for r in list_decisions(db_path, event_id="r5-4")] == ["coalesced", "deferred"]
    assert [r.event_id for r in list_decisions(db_path, model="churn", limit=3)] == ["new-1", "r5-4", "r5-4"]
    assert [r.event_id for r in list_decisions(db_path, event_prefix="r5-", limit=2)] == ["r5-4", "r5-4"]
    with sqlite3.connect(db_path) as db:
        viewed = db.execute("SELECT seq, event_id, kind FROM sensor_decisions ORDER BY seq, event_id").fetchall()
    assert viewed == [(1, "r5-1", "triggered"), (2, "r5-2", "coalesced"), (3, "r5-3", "coalesced"),
                      (3, "r5-4", "coalesced"), (4, "new-1", "rejected")], "the packed rows number on from the old"


def test_the_keys_that_ran_before_packing_still_ran_and_the_view_gives_each_key_its_first_run(tmp_path):
    db_path = tmp_path / "state.db"
    with sqlite3.connect(db_path) as db:
        db.executescript(ROUND_5)
    log = DecisionLog(db_path, "ctloop-sensor")
    refused = Decision("deduped", "engine refused: key already ran (run-9)", candidate(2), run_id="run-9")
    older = Candidate(event_id="r5-1b", model="churn", key="k-r5-1", uri="s3://d/x", digest="dx", trigger="data",
                      event_time=0.0)
    with log.transaction():
        log.record([triggered(2, "run-2"), (refused, None),
                    (Decision("deduped", "engine refused", older, run_id="run-1"), None)], at=2.0)
    assert log.ran(["k-r5-1", "k2", "k-r5-3"]) == {"k-r5-1", "k2"}
    log.close()
    with sqlite3.connect(db_path) as db:
        runs = db.execute("SELECT key, event_id, run_id, at FROM sensor_runs ORDER BY key").fetchall()
    assert runs == [("k-r5-1", "r5-1", "run-1", 1.0), ("k2", "ev-2", "run-2", 2.0)]


def test_two_models_bursts_interleaved_read_back_a_burst_at_a_time_and_by_model(tmp_path):
    log = DecisionLog(tmp_path / "state.db", "ctloop-sensor")
    state = AdmissionState()
    for model in ("a", "b"):
        state = started(admit_all(state, [candidate(0, model)], ran=set(), now=0.0, policy=POLICY).state,
                        model, f"run-{model}")
    arrivals = [candidate(n, "ab"[n % 2]) for n in range(1, 7)]
    outcome = admit_all(state, arrivals, ran=set(), now=1.0, policy=POLICY)
    with log.transaction():
        log.record(((d, None) for d in outcome.decisions), at=1.0)
    read = [(d.event_id, d.kind) for d in log.decisions()]
    log.close()
    # As a row per burst gave them back: a model's queued-and-replaced events together, then the last queued.
    assert read == [("ev-1", "deferred"), ("ev-1", "coalesced"), ("ev-3", "deferred"), ("ev-3", "coalesced"),
                    ("ev-2", "deferred"), ("ev-2", "coalesced"), ("ev-4", "deferred"), ("ev-4", "coalesced"),
                    ("ev-5", "deferred"), ("ev-6", "deferred")]
    assert sorted(read) == sorted((d.candidate.event_id, d.kind) for d in outcome.decisions)
    by_model = list_decisions(tmp_path / "state.db", model="b", limit=3)
    assert [(r.event_id, r.kind, r.model) for r in by_model] == [("ev-5", "deferred", "b"), ("ev-3", "coalesced", "b"),
                                                                 ("ev-3", "deferred", "b")]


def test_an_id_json_cannot_write_as_utf8_leaves_the_other_ids_of_its_row_findable(tmp_path):
    db = tmp_path / "state.db"
    log = DecisionLog(db, "ctloop-sensor")
    with log.transaction():
        log.record_rejections([("ev-\udc80", "churn", "filtered"), ("ev-\u00e9", "churn", "filtered")], at=1.0)
    log.close()
    assert [r.event_id for r in list_decisions(db, event_id="ev-\u00e9")] == ["ev-\u00e9"]
    assert [r.event_id for r in list_decisions(db, event_id="ev-\udc80")] == ["ev-\udc80"]
    assert [r.event_id for r in list_decisions(db, event_prefix="ev-")] == ["ev-\u00e9", "ev-\udc80"]

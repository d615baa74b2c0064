"""Admission of scheduled ticks: the same rules as arrivals, with the drift cooldown and a "no change" reason."""

from __future__ import annotations

from ctloop.sensors.admission import AdmissionPolicy, AdmissionState, Candidate, admit, finished, started, tick


def cand(n: int, trigger: str = "data") -> Candidate:
    return Candidate(event_id=f"e{n}", model="m", key=f"m-k{n}", uri=f"file:///d/{n}", digest=f"d{n}",
                     trigger=trigger, params={}, event_time=float(n))


def kinds(outcome) -> list[tuple[str, str]]:
    return [(d.kind, d.candidate.event_id) for d in outcome.decisions]


POLICY = AdmissionPolicy(window_s=0, drift_cooldown_s=100)


def test_a_tick_whose_key_already_ran_is_skipped_as_no_change():
    out = admit(AdmissionState(), cand(1, trigger="schedule"), already_ran=True, now=0, policy=POLICY)
    [decision] = out.decisions
    assert decision.kind == "deduped" and out.start == ()
    assert decision.reason == ("no change since the last run (same data digest and code version): skipped, "
                               "key m-k1")


def test_a_tick_within_the_drift_cooldown_is_rejected_and_after_it_runs():
    drift = admit(AdmissionState(), cand(1, trigger="drift"), already_ran=False, now=10, policy=POLICY)
    state = finished(started(drift.state, "m", "r1"), "m")
    held = admit(state, cand(2, trigger="schedule"), already_ran=False, now=50, policy=POLICY)
    assert kinds(held) == [("rejected", "e2")] and "drift cooldown for m until 110.000" in held.decisions[0].reason
    later = admit(state, cand(3, trigger="schedule"), already_ran=False, now=111, policy=POLICY)
    assert [c.event_id for c in later.start] == ["e3"]
    data = admit(state, cand(4), already_ran=False, now=50, policy=POLICY)
    assert [c.event_id for c in data.start] == ["e4"], "arrivals are not held by the cooldown"


def test_a_tick_replaces_the_arrival_queued_behind_a_running_run():
    running = admit(AdmissionState(), cand(1), already_ran=False, now=0, policy=POLICY)
    state = started(running.state, "m", "r1")
    queued = admit(state, cand(2), already_ran=False, now=1, policy=POLICY).state
    out = admit(queued, cand(3, trigger="schedule"), already_ran=False, now=2, policy=POLICY)
    assert kinds(out) == [("coalesced", "e2"), ("deferred", "e3")]
    after = tick(finished(out.state, "m"), now=3, policy=POLICY)
    assert [c.event_id for c in after.start] == ["e3"]

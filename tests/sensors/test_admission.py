"""Admission control as a pure function of state, candidate and clock."""

from __future__ import annotations

from ctloop.sensors.admission import (
    AdmissionPolicy,
    AdmissionState,
    Candidate,
    admit,
    finished,
    next_due,
    started,
    tick,
)


def cand(n: int, model: str = "m", trigger: str = "data", gpu: bool = False, key: str | None = None) -> Candidate:
    return Candidate(event_id=f"e{n}", model=model, key=key or f"{model}-k{n}", uri=f"file:///d/{n}",
                     digest=f"d{n}", trigger=trigger, gpu=gpu, event_time=float(n))


def kinds(outcome) -> list[tuple[str, str]]:
    return [(d.kind, d.candidate.event_id) for d in outcome.decisions]


IMMEDIATE = AdmissionPolicy(window_s=0)


def test_an_idle_model_starts_at_once_without_a_window():
    out = admit(AdmissionState(), cand(1), already_ran=False, now=0, policy=IMMEDIATE)
    assert [c.event_id for c in out.start] == ["e1"]
    assert out.state.running["m"].run_id is None


def test_a_key_that_already_ran_is_deduped():
    out = admit(AdmissionState(), cand(1), already_ran=True, now=0, policy=IMMEDIATE)
    assert kinds(out) == [("deduped", "e1")]
    assert out.start == () and out.state == AdmissionState()


def test_a_key_waiting_or_running_is_deduped():
    state = admit(AdmissionState(), cand(1), already_ran=False, now=0, policy=IMMEDIATE).state
    out = admit(state, cand(2, key="m-k1"), already_ran=False, now=1, policy=IMMEDIATE)
    assert kinds(out) == [("deduped", "e2")]
    assert "running" in out.decisions[0].reason


def test_a_burst_within_the_window_becomes_one_run_on_the_newest():
    policy = AdmissionPolicy(window_s=10)
    state = AdmissionState()
    decided = []
    for n in range(1, 5):
        out = admit(state, cand(n), already_ran=False, now=n, policy=policy)
        state = out.state
        decided += kinds(out)
    assert decided == [("deferred", "e1"), ("coalesced", "e1"), ("deferred", "e2"), ("coalesced", "e2"),
                       ("deferred", "e3"), ("coalesced", "e3"), ("deferred", "e4")]
    assert next_due(state) == 11
    assert tick(state, now=10.9, policy=policy).start == ()
    out = tick(state, now=11, policy=policy)
    assert [c.event_id for c in out.start] == ["e4"]
    assert out.state.windows == {}


def test_windows_are_per_model():
    policy = AdmissionPolicy(window_s=5)
    state = admit(AdmissionState(), cand(1, "a"), already_ran=False, now=0, policy=policy).state
    state = admit(state, cand(2, "b"), already_ran=False, now=1, policy=policy).state
    assert sorted(c.model for c in tick(state, now=6, policy=policy).start) == ["a", "b"]


def test_a_busy_model_queues_latest_only():
    state = admit(AdmissionState(), cand(1), already_ran=False, now=0, policy=IMMEDIATE).state
    state = started(state, "m", "run-1")
    out2 = admit(state, cand(2), already_ran=False, now=1, policy=IMMEDIATE)
    assert kinds(out2) == [("deferred", "e2")] and out2.start == ()
    out3 = admit(out2.state, cand(3), already_ran=False, now=2, policy=IMMEDIATE)
    assert kinds(out3) == [("coalesced", "e2"), ("deferred", "e3")]
    assert tick(out3.state, now=3, policy=IMMEDIATE).start == ()
    freed = finished(out3.state, "m")
    out = tick(freed, now=4, policy=IMMEDIATE)
    assert [c.event_id for c in out.start] == ["e3"]
    assert out.state.queued == {}


def test_drift_runs_are_followed_by_a_cooldown():
    policy = AdmissionPolicy(window_s=0, drift_cooldown_s=100)
    out = admit(AdmissionState(), cand(1, trigger="drift"), already_ran=False, now=0, policy=policy)
    state = finished(started(out.state, "m", "r1"), "m")
    assert kinds(admit(state, cand(2, trigger="drift"), already_ran=False, now=50, policy=policy)) == [
        ("rejected", "e2")]
    assert admit(state, cand(3, trigger="data"), already_ran=False, now=50, policy=policy).start
    assert admit(state, cand(4, trigger="drift"), already_ran=False, now=100, policy=policy).start


def test_gpu_runs_are_capped_across_models():
    policy = AdmissionPolicy(window_s=0, max_gpu_runs=1)
    out_a = admit(AdmissionState(), cand(1, "a", gpu=True), already_ran=False, now=0, policy=policy)
    out_b = admit(out_a.state, cand(2, "b", gpu=True), already_ran=False, now=1, policy=policy)
    assert kinds(out_b) == [("deferred", "e2")]
    assert "GPU cap" in out_b.decisions[0].reason
    out_c = admit(out_b.state, cand(3, "c", gpu=False), already_ran=False, now=2, policy=policy)
    assert [c.event_id for c in out_c.start] == ["e3"]
    state = finished(started(out_c.state, "a", "ra"), "a")
    assert [c.event_id for c in tick(state, now=3, policy=policy).start] == ["e2"]


def test_state_round_trips_through_json():
    policy = AdmissionPolicy(window_s=5)
    state = admit(AdmissionState(), cand(1), already_ran=False, now=0, policy=policy).state
    assert AdmissionState.model_validate_json(state.model_dump_json()) == state

"""Admission control: which mapped events become runs, and when. Pure: state and clock in, decisions out.

Rules, in order, for each candidate run:
- dedupe: a key that already ran, or is already waiting or running, is dropped;
- cooldown: a drift-triggered or scheduled candidate within `drift_cooldown_s` of the model's last drift run
  is rejected;
- coalesce: arrivals for a model within `window_s` of the first one collapse into one run on the newest;
- concurrency: one run per model; a candidate for a busy model waits, and a newer one replaces it;
- GPU cap: at most `max_gpu_runs` GPU runs at once; GPU candidates past the cap wait.

`admit` handles one candidate; `tick` closes due windows and starts what may start; `started` and
`finished` record what the engine did. The edge persists `AdmissionState` with the decisions, in one
transaction, before it commits the consumer offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

DecisionKind = Literal["triggered", "deduped", "coalesced", "deferred", "rejected"]
Trigger = Literal["data", "drift", "manual", "schedule"]
# Triggers held off after a drift run: another drift verdict, and a scheduled tick (the drift run has just
# retrained on the recent data).
COOLDOWN_TRIGGERS: tuple[Trigger, ...] = ("drift", "schedule")


class AdmissionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: float = 0.0
    drift_cooldown_s: float = 3600.0
    max_gpu_runs: int = 1


class Candidate(BaseModel):
    """A run the sensor would start: the trigger's parameters plus what admission needs."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    model: str
    key: str
    uri: str
    digest: str
    trigger: Trigger
    params: dict[str, str]
    gpu: bool = False
    event_time: float


class Slot(BaseModel):
    """A model's run: reserved (run_id None) until the engine accepted it."""

    model_config = ConfigDict(frozen=True)

    candidate: Candidate
    run_id: str | None = None
    started_at: float


class Window(BaseModel):
    model_config = ConfigDict(frozen=True)

    candidate: Candidate
    due_at: float


class AdmissionState(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: dict[str, Window] = {}
    queued: dict[str, Candidate] = {}
    running: dict[str, Slot] = {}
    last_drift_at: dict[str, float] = {}

    def holds(self, candidate: Candidate) -> str | None:
        """Where the candidate's key already is: in a window, in the queue, or running. A key names its
        model, so only that model's entries can hold it."""
        model = candidate.model
        window, queued, slot = self.windows.get(model), self.queued.get(model), self.running.get(model)
        if window is not None and window.candidate.key == candidate.key:
            return "window"
        if queued is not None and queued.key == candidate.key:
            return "queue"
        if slot is not None and slot.candidate.key == candidate.key:
            return "running"
        return None

    def gpu_runs(self) -> int:
        return sum(1 for s in self.running.values() if s.candidate.gpu)


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str
    candidate: Candidate
    run_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    state: AdmissionState
    decisions: tuple[Decision, ...] = ()
    start: tuple[Candidate, ...] = ()


def _with(mapping: Mapping[str, object], key: str, value: object | None) -> dict:
    out = dict(mapping)
    if value is None:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def admit(state: AdmissionState, candidate: Candidate, *, already_ran: bool, now: float,
          policy: AdmissionPolicy) -> Outcome:
    """Decide on one candidate. `already_ran` says whether its key ever triggered a run (durable record)."""
    if already_ran:
        reason = (f"no change since the last run (same data digest and code version): skipped, key {candidate.key}"
                  if candidate.trigger == "schedule" else f"key {candidate.key} already triggered a run")
        return Outcome(state, (Decision("deduped", reason, candidate),))
    where = state.holds(candidate)
    if where:
        return Outcome(state, (Decision("deduped", f"key {candidate.key} is already in the {where}", candidate),))
    last = state.last_drift_at.get(candidate.model)
    if candidate.trigger in COOLDOWN_TRIGGERS and last is not None and now < last + policy.drift_cooldown_s:
        reason = f"drift cooldown for {candidate.model} until {last + policy.drift_cooldown_s:.3f}"
        return Outcome(state, (Decision("rejected", reason, candidate),))
    window = state.windows.get(candidate.model)
    if window is None and policy.window_s <= 0:
        return _enqueue(state, candidate, now, policy)
    decisions = []
    due = window.due_at if window else now + policy.window_s
    if window is not None:
        decisions.append(Decision("coalesced", f"merged into newer {candidate.event_id}", window.candidate))
    decisions.append(Decision("deferred", f"coalescing window open until {due:.3f}", candidate))
    windows = _with(state.windows, candidate.model, Window(candidate=candidate, due_at=due))
    return Outcome(state.model_copy(update={"windows": windows}), tuple(decisions))


def _enqueue(state: AdmissionState, candidate: Candidate, now: float, policy: AdmissionPolicy) -> Outcome:
    """Start `candidate` now if its model is idle and the GPU cap allows, else queue it (latest only)."""
    model = candidate.model
    blocked = (f"{model} has a run in progress" if model in state.running
               else "GPU cap reached" if candidate.gpu and state.gpu_runs() >= policy.max_gpu_runs else None)
    if blocked is None:
        return Outcome(*_reserve(state, candidate, now))
    decisions = []
    previous = state.queued.get(model)
    if previous is not None:
        decisions.append(Decision("coalesced", f"queued run replaced by newer {candidate.event_id}", previous))
    decisions.append(Decision("deferred", f"{blocked}; queued (latest only)", candidate))
    return Outcome(state.model_copy(update={"queued": _with(state.queued, model, candidate)}), tuple(decisions))


def _reserve(state: AdmissionState, candidate: Candidate, now: float) -> tuple[AdmissionState, tuple, tuple]:
    model = candidate.model
    update: dict[str, object] = {
        "queued": _with(state.queued, model, None),
        "running": _with(state.running, model, Slot(candidate=candidate, started_at=now)),
    }
    if candidate.trigger == "drift":
        update["last_drift_at"] = _with(state.last_drift_at, model, now)
    return state.model_copy(update=update), (), (candidate,)


def tick(state: AdmissionState, *, now: float, policy: AdmissionPolicy) -> Outcome:
    """Close due windows, then start queued candidates whose model is free and whose GPU fits."""
    decisions: list[Decision] = []
    start: list[Candidate] = []
    for model, window in sorted(state.windows.items()):
        if window.due_at <= now:
            state = state.model_copy(update={"windows": _with(state.windows, model, None)})
            outcome = _enqueue(state, window.candidate, now, policy)
            state = outcome.state
            decisions.extend(outcome.decisions)
            start.extend(outcome.start)
    for model, candidate in sorted(state.queued.items(), key=lambda kv: kv[1].event_time):
        if model in state.running or (candidate.gpu and state.gpu_runs() >= policy.max_gpu_runs):
            continue
        state, _, started_now = _reserve(state, candidate, now)
        start.extend(started_now)
    return Outcome(state, tuple(decisions), tuple(start))


def next_due(state: AdmissionState) -> float | None:
    """When the earliest open window closes; None when no window is open."""
    return min((w.due_at for w in state.windows.values()), default=None)


def started(state: AdmissionState, model: str, run_id: str) -> AdmissionState:
    """The engine accepted the model's reserved run."""
    slot = state.running[model].model_copy(update={"run_id": run_id})
    return state.model_copy(update={"running": _with(state.running, model, slot)})


def finished(state: AdmissionState, model: str) -> AdmissionState:
    """The model's run ended, or the engine refused it: its slot frees for the queued candidate."""
    return state.model_copy(update={"running": _with(state.running, model, None)})

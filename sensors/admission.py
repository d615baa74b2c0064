"""Admission control: which mapped events become runs, and when. Pure: state and clock in, decisions out.

Rules, in order, for each candidate run:
- dedupe: a key that already ran, or is already waiting or running, is dropped;
- cooldown: a drift-, quality-triggered or scheduled candidate within `drift_cooldown_s` of the model's last
  drift- or quality-triggered run is rejected;
- coalesce: arrivals for a model within `window_s` of the first one collapse into one run on the newest;
- concurrency: one run per model; a candidate for a busy model waits, and a newer one replaces it;
- GPU cap: at most `max_gpu_runs` GPU runs at once; GPU candidates past the cap wait.

`admit` handles one candidate and `admit_all` a batch of them in order; `tick` closes due windows and
starts what may start; `started` and `finished` record what the engine did. The edge persists
`AdmissionState` with the decisions, in one transaction, before it commits the consumer offsets.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple, get_args

import msgspec
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import core_schema

DecisionKind = Literal["triggered", "deduped", "coalesced", "deferred", "rejected"]
Trigger = Literal["data", "drift", "manual", "schedule", "quality"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)
# Triggers that start a cooldown: a drift verdict and a live-quality drop both retrain on the recent data.
RECENT_DATA_TRIGGERS: tuple[Trigger, ...] = ("drift", "quality")
# Triggers held off after such a run: another drift or quality verdict, and a scheduled tick (the run has just
# retrained on the recent data).
COOLDOWN_TRIGGERS: tuple[Trigger, ...] = ("drift", "quality", "schedule")


def unknown_trigger(trigger: str) -> str | None:
    """Why `trigger` cannot make a candidate (which is not validated when made), or None when it can."""
    return None if trigger in TRIGGERS else f"trigger {trigger!r} is not one of {TRIGGERS}"


class AdmissionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_s: float = 0.0
    drift_cooldown_s: float = 3600.0
    max_gpu_runs: int = 1


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """What admission keeps per candidate and model: made per event, so made unvalidated (~0.1 µs rather than a
    pydantic model's ~1.5) by code that has checked its fields; validated where it is read back, inside a
    saved `AdmissionState`, whose JSON is the same as when these were pydantic models."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def read(value: Any) -> _Record:
            if isinstance(value, cls):
                return value
            try:
                return msgspec.convert(value, cls, strict=False)
            except msgspec.ValidationError as exc:
                raise ValueError(f"not a {cls.__name__}: {exc}") from None

        return core_schema.no_info_plain_validator_function(
            read, serialization=core_schema.plain_serializer_function_ser_schema(msgspec.to_builtins))


class _Tolerant(type(_Record)):  # type: ignore[misc]
    """A struct class whose call ignores keywords that name no field, as a pydantic model's does."""

    def __call__(cls, *args: Any, **fields: Any) -> Any:
        try:
            return super().__call__(*args, **fields)
        except TypeError:
            known = cls.__struct_fields__
            return super().__call__(*args, **{k: v for k, v in fields.items() if k in known})


class Candidate(_Record, metaclass=_Tolerant, frozen=True, kw_only=True):
    """A run the sensor would start: the trigger's parameters plus what admission needs.

    Its maker has checked its fields (the sensor's route checks the trigger; the rest are strings it read).
    `new_candidate` makes one in C; calling the class, which ignores unknown keywords as the pydantic model
    did, takes a Python frame more."""

    event_id: str
    model: str
    key: str
    uri: str
    digest: str
    trigger: Trigger
    gpu: bool = False
    event_time: float


# A candidate made from its fields by keyword, in C: `msgspec.structs.replace` of a blank one.
new_candidate = partial(msgspec.structs.replace, Candidate(event_id="", model="", key="", uri="", digest="",
                                                           trigger="data", event_time=0.0))


class Slot(_Record, frozen=True, kw_only=True):
    """A model's run: reserved (run_id None) until the engine accepted it."""

    candidate: Candidate
    run_id: str | None = None
    started_at: float


class Window(_Record, frozen=True, kw_only=True):
    candidate: Candidate
    due_at: float


class AdmissionState(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: dict[str, Window] = {}
    queued: dict[str, Candidate] = {}
    running: dict[str, Slot] = {}
    last_drift_at: dict[str, float] = {}


class Decision(NamedTuple):
    """What admission decided about a candidate (immutable; a tuple, cheap to make: a burst makes two per event)."""

    kind: DecisionKind
    reason: str
    candidate: Candidate
    run_id: str | None = None


# A decision made in C, as `_made(Decision, (kind, reason, candidate, run_id))`: a named tuple's own constructor
# is a Python function (~0.5 µs), and admission makes one or two per event.
_made = tuple.__new__


@dataclass(frozen=True)
class Outcome:
    state: AdmissionState
    decisions: tuple[Decision, ...] = ()
    start: tuple[Candidate, ...] = ()


class _Draft:
    """A state being decided on: its maps are copied once and changed in place, so that deciding a batch
    costs one copy of the state rather than one per candidate."""

    def __init__(self, state: AdmissionState) -> None:
        self.origin = state
        self.windows = dict(state.windows)
        self.queued = dict(state.queued)
        self.running = dict(state.running)
        self.last_drift_at = dict(state.last_drift_at)
        self.decisions: list[Decision] = []
        self.start: list[Candidate] = []
        self.changed = False

    def outcome(self) -> Outcome:
        state = self.origin
        if self.changed:
            state = state.model_copy(update={"windows": self.windows, "queued": self.queued,
                                             "running": self.running, "last_drift_at": self.last_drift_at})
        return Outcome(state, tuple(self.decisions), tuple(self.start))

    def gpu_runs(self) -> int:
        return sum(1 for s in self.running.values() if s.candidate.gpu)

    def admit_all(self, candidates: Iterable[Candidate], ran: Container[str], now: float,
                  policy: AdmissionPolicy) -> None:
        """Decide on each candidate in order (the rules in the module's note); `ran` holds the keys that ever
        triggered a run. One loop over the batch, the draft's maps and the policy read once."""
        decide, windows, queued, running = self.decisions.append, self.windows, self.queued, self.running
        last_drift_at, enqueue = self.last_drift_at, self.enqueue
        window_s, cooldown_s = policy.window_s, policy.drift_cooldown_s
        for candidate in candidates:
            model, key = candidate.model, candidate.key
            if key in ran:
                reason = (f"no change since the last run (same data digest and code version): skipped, key {key}"
                          if candidate.trigger == "schedule" else f"key {key} already triggered a run")
                decide(_made(Decision, ("deduped", reason, candidate, None)))
                continue
            # Where the key already is: a key names its model, so only that model's entries can hold it.
            window, waiting, slot = windows.get(model), queued.get(model), running.get(model)
            where = ("window" if window is not None and window.candidate.key == key
                     else "queue" if waiting is not None and waiting.key == key
                     else "running" if slot is not None and slot.candidate.key == key else None)
            if where is not None:
                decide(_made(Decision, ("deduped", f"key {key} is already in the {where}", candidate, None)))
                continue
            if candidate.trigger in COOLDOWN_TRIGGERS:
                last = last_drift_at.get(model)
                if last is not None and now < last + cooldown_s:
                    reason = f"drift cooldown for {model} until {last + cooldown_s:.3f}"
                    decide(_made(Decision, ("rejected", reason, candidate, None)))
                    continue
            if window is None and window_s <= 0:
                enqueue(candidate, now, policy)
                continue
            due = window.due_at if window else now + window_s
            if window is not None:
                decide(_made(Decision, ("coalesced", f"merged into newer {candidate.event_id}", window.candidate,
                                        None)))
            decide(_made(Decision, ("deferred", f"coalescing window open until {due:.3f}", candidate, None)))
            windows[model] = Window(candidate=candidate, due_at=due)
            self.changed = True

    def enqueue(self, candidate: Candidate, now: float, policy: AdmissionPolicy) -> None:
        """Start `candidate` now if its model is idle and the GPU cap allows, else queue it (latest only)."""
        model = candidate.model
        deferred = (f"{model} has a run in progress; queued (latest only)" if model in self.running
                    else "GPU cap reached; queued (latest only)"
                    if candidate.gpu and self.gpu_runs() >= policy.max_gpu_runs else None)
        if deferred is None:
            self.reserve(candidate, now)
            return
        previous = self.queued.get(model)
        if previous is not None:
            reason = f"queued run replaced by newer {candidate.event_id}"
            self.decisions.append(_made(Decision, ("coalesced", reason, previous, None)))
        self.decisions.append(_made(Decision, ("deferred", deferred, candidate, None)))
        self.queued[model] = candidate
        self.changed = True

    def reserve(self, candidate: Candidate, now: float) -> None:
        model = candidate.model
        self.queued.pop(model, None)
        self.running[model] = Slot(candidate=candidate, started_at=now)
        if candidate.trigger in RECENT_DATA_TRIGGERS:
            self.last_drift_at[model] = now
        self.start.append(candidate)
        self.changed = True


def admit(state: AdmissionState, candidate: Candidate, *, already_ran: bool, now: float,
          policy: AdmissionPolicy) -> Outcome:
    """Decide on one candidate. `already_ran` says whether its key ever triggered a run (durable record)."""
    return admit_all(state, (candidate,), ran=frozenset([candidate.key]) if already_ran else frozenset(), now=now,
                     policy=policy)


def admit_all(state: AdmissionState, candidates: Iterable[Candidate], *, ran: Container[str], now: float,
              policy: AdmissionPolicy) -> Outcome:
    """Decide on candidates in order, exactly as one `admit` after another would; `ran` holds the keys
    that ever triggered a run (durable record)."""
    draft = _Draft(state)
    draft.admit_all(candidates, ran, now, policy)
    return draft.outcome()


def tick(state: AdmissionState, *, now: float, policy: AdmissionPolicy) -> Outcome:
    """Close due windows, then start queued candidates whose model is free and whose GPU fits."""
    draft = _Draft(state)
    for model, window in sorted(state.windows.items()):
        if window.due_at <= now:
            del draft.windows[model]
            draft.changed = True
            draft.enqueue(window.candidate, now, policy)
    for model, candidate in sorted(draft.queued.items(), key=lambda kv: kv[1].event_time):
        if model in draft.running or (candidate.gpu and draft.gpu_runs() >= policy.max_gpu_runs):
            continue
        draft.reserve(candidate, now)
    return draft.outcome()


def _with(mapping: Mapping[str, object], key: str, value: object | None) -> dict:
    out = dict(mapping)
    if value is None:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def next_due(state: AdmissionState) -> float | None:
    """When the earliest open window closes; None when no window is open."""
    return min((w.due_at for w in state.windows.values()), default=None)


def started(state: AdmissionState, model: str, run_id: str) -> AdmissionState:
    """The engine accepted the model's reserved run."""
    slot = msgspec.structs.replace(state.running[model], run_id=run_id)
    return state.model_copy(update={"running": _with(state.running, model, slot)})


def finished(state: AdmissionState, model: str) -> AdmissionState:
    """The model's run ended, or the engine refused it: its slot frees for the queued candidate."""
    return state.model_copy(update={"running": _with(state.running, model, None)})

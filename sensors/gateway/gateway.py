"""The admission gateway: the cluster's admission control, one replica of a consumer group on the admission topic.

Argo Events Sensors filter and map events as before, then put each candidate run on the admission topic keyed
by model, so each model's requests land in one partition and one replica decides them. A replica decides with
the same `ctloop.sensors.admission` functions `LocalSensor` runs, keeps each model's state and every decision
in the shared `GatewayStore`, and submits admitted runs through a `Submitter` (Argo's engine in the cluster).

Per batch: parse (bad requests are dead-lettered), drop events already decided (an event id seen before with
another request body is dead-lettered, as `LocalSensor` does; each message once, recorded in the store), decide,
record the decisions and the state in one transaction fenced by partition ownership, and only then commit the
offsets; then submit the runs reserved and record what the engine said. A replica killed anywhere loses
nothing: its partitions' next owner loads their state from the store (a reserved run is submitted again, and
the engine refuses a key it already has) and gets the uncommitted requests again, which are skipped by event
id once decided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ctloop.bus import Bus, Message
from ctloop.deadletter import DeadLetters
from ctloop.kafka_bus import RdKafkaBusConsumer
from ctloop.sensors.admission import (
    AdmissionPolicy,
    AdmissionState,
    Candidate,
    Decision,
    Slot,
    admit_all,
    finished,
    started,
    tick,
)
from ctloop.sensors.gateway.request import Request, RequestInvalid, read_request
from ctloop.sensors.gateway.store import DeadLetterRows, Fenced, GatewayStore, changed_models, part
from ctloop.sensors.gateway.submitter import Submitter
from ctloop.stopping import until_signalled
from ctloop.workflows.engine import FINAL_STATUSES, AlreadyRan, RunRequest

_log = logging.getLogger("ctloop.gateway")
_PHANTOM = "\x00gpu-held-elsewhere-"


class Gateway:
    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        deadletter_topic: str,
        bus: Bus,
        store: GatewayStore,
        submitter: Submitter,
        group: str = "ctloop-gateway",
        policy: AdmissionPolicy | None = None,
        clock: Callable[[], float] = time.time,
        batch_size: int = 500,
        status_interval_s: float = 0.5,
        session_timeout_ms: int = 6000,
    ) -> None:
        self.topic = topic
        self.deadletter_topic = deadletter_topic
        self.bus = bus
        self.store = store
        self.submitter = submitter
        self.policy = policy or AdmissionPolicy()
        self.clock = clock
        self.batch_size = batch_size
        self.status_interval_s = status_interval_s
        self.state = AdmissionState()
        self.partition_of: dict[str, int] = {}
        self._next_status_check = 0.0
        self._status_beat = False
        self._engine_down_until = 0.0
        self.dead_letters = DeadLetters(bus, deadletter_topic, DeadLetterRows(store, topic, clock))
        self._recover_dead_letters = False
        self._consumer = RdKafkaBusConsumer(
            bootstrap, [topic], group, client_id=f"{group}-{store.replica}", session_timeout_ms=session_timeout_ms,
            on_assigned=lambda pairs: self.assigned(p for _, p in pairs),
            on_revoked=lambda pairs: self.revoked(p for _, p in pairs),
            # Partitions added to the topic later are picked up within seconds, not the default five minutes.
            **{"topic.metadata.refresh.interval.ms": 5000})

    # --- the loop ----------------------------------------------------------------------------------

    def step(self, timeout_s: float = 0.1) -> int:
        """Consume one batch (waiting up to `timeout_s`) and decide it; then start whatever admission allows."""
        messages = self._consumer.poll(timeout_s=timeout_s, max_records=self.batch_size)
        owned = self.store.owned
        messages = [m for m in messages if m.partition in owned]
        if self._recover_dead_letters:
            # Dead letters a previous owner of new partitions recorded and may not have sent; before their
            # messages come again.
            self.dead_letters.recover()
            self._recover_dead_letters = False
        if messages:
            self._consume(messages)
        self.advance()
        return len(messages)

    def run(self, should_stop: Callable[[], bool], poll_timeout_s: float = 0.1) -> None:
        while not should_stop():
            self.step(poll_timeout_s)

    def run_until_signalled(self, poll_timeout_s: float = 0.1) -> None:
        """Run until SIGTERM or SIGINT; the batch in hand is decided and committed first."""
        until_signalled(lambda should_stop: self.run(should_stop, poll_timeout_s), self.close)

    def close(self) -> None:
        self._consumer.close()
        self.store.close()

    # --- partitions --------------------------------------------------------------------------------

    def assigned(self, partitions: Iterable[int]) -> None:
        """Load the state of the models these partitions hold; from now on this replica decides them."""
        partitions = sorted(set(partitions))
        loaded, where = self.store.claim(partitions)
        self.state = self.state.model_copy(update={
            "windows": {**self.state.windows, **loaded.windows}, "queued": {**self.state.queued, **loaded.queued},
            "running": {**self.state.running, **loaded.running},
            "last_drift_at": {**self.state.last_drift_at, **loaded.last_drift_at}})
        self.partition_of.update(where)
        self._recover_dead_letters = True
        _log.info("assigned partitions %s: %d models with state", partitions, len(where))

    def revoked(self, partitions: Iterable[int]) -> None:
        """Forget the models of partitions another replica takes over (everything decided is in the store)."""
        lost = set(partitions)
        _log.info("revoked partitions %s", sorted(lost))
        self.store.release(lost)
        self._forget(lost)

    def _forget(self, partitions: set[int]) -> None:
        gone = {m for m, p in self.partition_of.items() if p in partitions}
        if not gone:
            return
        self.state = AdmissionState(
            windows={m: w for m, w in self.state.windows.items() if m not in gone},
            queued={m: c for m, c in self.state.queued.items() if m not in gone},
            running={m: s for m, s in self.state.running.items() if m not in gone},
            last_drift_at={m: t for m, t in self.state.last_drift_at.items() if m not in gone})
        for model in gone:
            del self.partition_of[model]

    # --- deciding ----------------------------------------------------------------------------------

    def _consume(self, messages: list[Message]) -> None:
        try:
            fresh = self._fresh(messages)
        except Fenced as exc:  # a dead letter's partition moved: its new owner gets the batch again
            _log.warning("not decided: %s", exc)
            self._forget({m.partition for m in messages} - self.store.owned)
            return
        if self._decide([r.candidate for r in fresh.values()], {m.partition for m in messages},
                        {event_id: r.digest for event_id, r in fresh.items()}):
            last: dict[int, Message] = {}
            for message in messages:
                last[message.partition] = message
            for message in last.values():
                self._consumer.commit(message)

    def _fresh(self, messages: list[Message]) -> dict[str, Request]:
        """The requests of events not decided before, by event id; bad requests and event ids reused with
        another body are dead-lettered (once per message, even when it comes again)."""
        requests: list[tuple[Message, Request]] = []
        for message in messages:
            try:
                request = read_request(message)
            except RequestInvalid as exc:
                self.dead_letters.send(message, f"invalid admission request: {exc}")
                continue
            self.partition_of.setdefault(request.candidate.model, message.partition)
            requests.append((message, request))
        seen = self.store.seen({r.candidate.event_id for _, r in requests})
        fresh: dict[str, Request] = {}
        for message, request in requests:
            event_id = request.candidate.event_id
            before = fresh[event_id].digest if event_id in fresh else seen.get(event_id)
            if before is None:
                fresh[event_id] = request
            elif before not in (request.digest, ""):
                # Not a redelivery: a producer reused an id. Taking it as one would drop it silently.
                self.dead_letters.send(message, f"event id {event_id} reused with a different body")
        return fresh

    def _decide(self, candidates: Sequence[Candidate], touched: set[int],
                digests: Mapping[str, str] | None = None) -> bool:
        """Admit `candidates`, close due windows, reserve what may start, and record it all in one fenced
        transaction. False when a rebalance took a partition away (nothing was written)."""
        now = self.clock()
        ran = self.store.ran({c.key for c in candidates})
        gpu = any(c.gpu for c in candidates) or any(c.gpu for c in self.state.queued.values()) \
            or any(w.candidate.gpu for w in self.state.windows.values())
        try:
            with self.store.transaction(gpu=gpu) as writer:
                state = self.state
                if gpu:
                    state = _with_phantoms(state, writer.foreign_gpu_runs(set(self.state.running)))
                admitted = admit_all(state, candidates, ran=ran, now=now, policy=self.policy)
                ticked = tick(admitted.state, now=now, policy=self.policy)
                state = _without_phantoms(ticked.state)
                made = (*admitted.decisions, *ticked.decisions)
                changed = self._changed(state)
                writer.fence(touched | {self.partition_of[m] for m in changed})
                writer.mark_seen(digests or {}, now)
                writer.record(made, now)
                writer.mark_ran((*admitted.start, *ticked.start), now)
                writer.save({m: (self.partition_of[m], part) for m, part in changed.items()})
        except Fenced as exc:
            _log.warning("not decided: %s", exc)
            self._forget(touched - self.store.owned)
            return False
        self.state = state
        return True

    def _changed(self, state: AdmissionState) -> dict[str, dict | None]:
        return {m: part(state, m) for m in changed_models(self.state, state)}

    def advance(self) -> None:
        """Free the slots of finished runs, close due windows, start queued runs, submit reserved ones;
        repeated while a run that ended at once frees its model for a queued one."""
        for _ in range(100):
            freed = self._check_running()
            due = any(w.due_at <= self.clock() for w in self.state.windows.values())
            # Queued behind the GPU cap: freed by other replicas' runs too, so looked at on the status beat.
            waiting = freed or (self._status_beat and any(m not in self.state.running for m in self.state.queued))
            if (freed or due or waiting) and not self._decide((), set()):
                return
            if not self._submit_reserved():
                return

    def _check_running(self) -> bool:
        now = self.clock()
        self._status_beat = now >= self._next_status_check
        if not self._status_beat:
            return False
        self._next_status_check = now + self.status_interval_s
        state = self.state
        for model, slot in self.state.running.items():
            if slot.run_id is None:
                continue
            try:
                status = self.submitter.status(slot.run_id)
            except LookupError:
                status = "Error"
            except Exception as exc:  # the engine is unreachable: ask again on the next pass
                _log.warning("status of %s failed: %s", slot.run_id, exc)
                return False
            if status in FINAL_STATUSES:
                state = finished(state, model)
        return self._write(state, ())

    def _submit_reserved(self) -> bool:
        """Submit every reserved run; record what the engine said. True when a run ended at once."""
        if time.monotonic() < self._engine_down_until:
            return False
        state, made, freed = self.state, [], False
        for model, slot in sorted(self.state.running.items()):
            if slot.run_id is not None:
                continue
            outcome = self._submit(slot)
            if outcome is None:
                self._engine_down_until = time.monotonic() + 1.0
                break
            decision, status = outcome
            made.append(decision)
            state = started(state, model, decision.run_id or "unknown")
            if status in FINAL_STATUSES:
                state = finished(state, model)
                freed = True
        self._write(state, made)
        return freed and bool(self.state.queued)

    def _submit(self, slot: Slot) -> tuple[Decision, str] | None:
        c = slot.candidate
        request = RunRequest(model=c.model, data_uri=c.uri, trigger_event_id=c.event_id, trigger=c.trigger,
                             data_digest=c.digest or None, gpu=c.gpu, idempotency_key=c.key)
        try:
            handle = self.submitter.submit(request, wait=False)
        except AlreadyRan as exc:
            # Submitted before a crash or by the partition's previous owner: the slot follows that run, so the
            # model still has one run at a time.
            status = "Skipped"
            if exc.run_id:
                try:
                    status = self.submitter.status(exc.run_id)
                except Exception:
                    status = "Error"
            reason = f"engine refused: key already ran ({exc.run_id or 'unknown run'})"
            return Decision("deduped", reason, c, run_id=exc.run_id or "unknown"), status
        except Exception as exc:
            _log.error("submit of %s failed, retried: %s", c.key, exc)
            return None
        return Decision("triggered", f"run {handle.run_id} submitted", c, run_id=handle.run_id), handle.status

    def _write(self, state: AdmissionState, made: Sequence[Decision]) -> bool:
        """Record a state change the engine caused, fenced. False when a partition moved away."""
        changed = self._changed(state)
        if not changed and not made:
            return False
        try:
            with self.store.transaction() as writer:
                writer.fence({self.partition_of[m] for m in changed} | {self.partition_of[d.candidate.model]
                                                                         for d in made})
                writer.record(made, self.clock())
                writer.save({m: (self.partition_of[m], part) for m, part in changed.items()})
        except Fenced as exc:
            _log.warning("not recorded: %s", exc)
            self._forget(set(self.partition_of.values()) - self.store.owned)
            return False
        self.state = state
        return True


def _with_phantoms(state: AdmissionState, count: int) -> AdmissionState:
    """`state` plus `count` GPU slots held by other replicas' models, so that the cap counts them."""
    if not count:
        return state
    phantom = Candidate(event_id="", model=_PHANTOM, key="", uri="", digest="", trigger="data", gpu=True,
                        event_time=0.0)
    held = {f"{_PHANTOM}{i}": Slot(candidate=phantom, run_id="elsewhere", started_at=0.0) for i in range(count)}
    return state.model_copy(update={"running": {**state.running, **held}})


def _without_phantoms(state: AdmissionState) -> AdmissionState:
    if not any(m.startswith(_PHANTOM) for m in state.running):
        return state
    return state.model_copy(update={"running": {m: s for m, s in state.running.items()
                                                if not m.startswith(_PHANTOM)}})

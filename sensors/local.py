"""LocalSensor: the cluster's Kafka sensors interpreted on one machine, over any `Bus`, onto any `Engine`.

Per consumed batch: parse (bad messages are dead-lettered), apply each sensor's filters and parameter
mapping exactly as rendered, run admission control, and record every decision together with the
admission state in one SQLite transaction; only then commit the offsets. Runs are then submitted;
a reserved run survives a crash in that state and is submitted again on restart, where the engine
refuses a key that already ran. So a sensor killed at any instant loses no event and starts no run twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ctloop.bus import Bus, Message
from ctloop.consume import Unroutable
from ctloop.deadletter import dead_letter
from ctloop.events import Event, EventError, parse
from ctloop.settings import Settings
from sensors.admission import (
    AdmissionPolicy,
    AdmissionState,
    Candidate,
    Decision,
    admit,
    finished,
    started,
    tick,
)
from sensors.decisions import DecisionLog
from sensors.eventdata import PathMissing, kafka_event_data, lookup
from sensors.filters import rejection
from sensors.jsonlog import log
from sensors.mapping import MappingError, parameters, resolve
from sensors.metrics import SensorMetrics
from sensors.spec import KafkaSource, KeyOf, SensorSpec
from workflows.engine import FINAL_STATUSES, AlreadyRan, Engine, RunRequest

DigestResolver = Callable[[str], str]
TRIGGERS = ("data", "drift", "manual")
_log = logging.getLogger("ctloop.sensor")


class LocalSensor:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        engine: Engine,
        specs: Sequence[SensorSpec],
        *,
        group: str = "ctloop-sensor",
        policy: AdmissionPolicy | None = None,
        resolve_digest: DigestResolver | None = None,
        metrics: SensorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        batch_size: int = 500,
        status_interval_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.policy = policy or AdmissionPolicy()
        self.metrics = metrics or SensorMetrics()
        self.clock = clock
        self.batch_size = batch_size
        self.status_interval_s = status_interval_s
        self._resolve_digest = resolve_digest
        self._by_topic: dict[str, list[SensorSpec]] = {}
        for spec in specs:
            if not isinstance(spec.dependency.source, KafkaSource):
                raise ValueError(f"sensor {spec.name} reads {type(spec.dependency.source).__name__}; "
                                 "LocalSensor interprets Kafka-sourced sensors only")
            self._by_topic.setdefault(spec.dependency.source.topic, []).append(spec)
        self.log = DecisionLog(settings.state_db, group)
        self.state: AdmissionState = self.log.load_state()
        self._consumer = bus.consumer(sorted(self._by_topic), group)
        self._next_status_check = 0.0

    # --- the loop ----------------------------------------------------------------------------------

    def step(self, timeout_s: float = 0.1) -> int:
        """Consume one batch (waiting up to `timeout_s`), then start whatever admission allows."""
        messages = self._consumer.poll(timeout_s=timeout_s, max_records=self.batch_size)
        if messages:
            self._consume(messages)
        self.advance()
        return len(messages)

    def run(self, should_stop: Callable[[], bool], poll_timeout_s: float = 0.1) -> None:
        while not should_stop():
            self.step(poll_timeout_s)

    def close(self) -> None:
        self._consumer.close()
        self.log.close()

    # --- consuming ---------------------------------------------------------------------------------

    def _consume(self, messages: list[Message]) -> None:
        now = self.clock()
        self.metrics.events_in.inc(len(messages))
        routed: list[tuple[Event, Candidate | str]] = []
        for message in messages:
            try:
                event = parse(message.value, max_bytes=self.settings.max_event_bytes)
                routed.append((event, self._candidate(event, message)))
            except EventError as exc:
                self._dead_letter(message, exc.reason)
            except Unroutable as exc:
                self._dead_letter(message, f"unroutable: {exc}")
        state = self.state
        start: list[Candidate] = []
        with self.log.transaction():
            for event, routed_to in routed:
                if self.log.seen(event.id):
                    self.metrics.redelivered.inc()
                    continue
                self.log.mark_seen(event.id, now)
                if isinstance(routed_to, str):
                    self.metrics.filtered.inc()
                    self.log.record_rejection(event.id, event.model, routed_to, at=now)
                    continue
                outcome = admit(state, routed_to, already_ran=self.log.ran(routed_to.key), now=now,
                                policy=self.policy)
                state = outcome.state
                self._record(outcome.decisions, now)
                start.extend(outcome.start)
            self.log.save_state(state)
        self.state = state
        self._commit(messages)

    def _commit(self, messages: list[Message]) -> None:
        last: dict[tuple[str, int], Message] = {}
        for message in messages:
            last[(message.topic, message.partition)] = message
        for message in last.values():
            self._consumer.commit(message)

    def _dead_letter(self, message: Message, reason: str) -> None:
        dead_letter(self.bus, self.settings.topics.deadletter, message, reason)
        self.metrics.dead_lettered.inc()
        log(_log, "dead-lettered", level=logging.WARNING, topic=message.topic, partition=message.partition,
            offset=message.offset, reason=reason)

    def _candidate(self, event: Event, message: Message) -> Candidate | str:
        """The candidate run of the first sensor whose filters pass, or why none did."""
        specs = self._by_topic.get(message.topic, [])
        data = kafka_event_data(message, json.loads(message.value))
        context = {"id": event.id, "type": event.type, "source": event.source, "subject": event.subject or ""}
        reasons = []
        for spec in specs:
            why = rejection(spec.dependency, data)
            if why:
                reasons.append(f"{spec.name}: {why}")
                continue
            digest = self._digest(spec, data, context)
            try:
                params = parameters(spec, data, context)
            except MappingError as exc:
                raise Unroutable(f"{spec.name}: {exc}") from None
            if params["trigger"] not in TRIGGERS:
                raise Unroutable(f"{spec.name}: trigger {params['trigger']!r} is not one of {TRIGGERS}")
            event_time = message.timestamp_ms / 1000 if message.timestamp_ms else event.time.timestamp()
            return Candidate(event_id=params["event-id"], model=params["model"], key=params["idempotency-key"],
                             uri=params["data-uri"], digest=digest, trigger=params["trigger"], params=params,
                             gpu=bool(getattr(event.data, "gpu", False)), event_time=event_time)
        return "; ".join(reasons) or f"no sensor listens on {message.topic}"

    def _digest(self, spec: SensorSpec, data: dict[str, Any], context: dict[str, str]) -> str:
        """The event's data digest; when absent, resolved by snapshotting the URI and written into the
        event data, so the key the mapping computes names the data rather than the event."""
        key = spec.params["idempotency-key"]
        if not isinstance(key, KeyOf):
            return ""
        try:
            digest = lookup(data, key.digest.path)
        except PathMissing:
            digest = None
        if digest or self._resolve_digest is None:
            return str(digest or "")
        try:
            uri = resolve(spec.params["data-uri"], data, context)
            digest = self._resolve_digest(uri)
        except (PathMissing, MappingError) as exc:
            raise Unroutable(f"{spec.name}: no data URI to snapshot: {exc}") from None
        except Exception as exc:
            raise Unroutable(f"{spec.name}: cannot snapshot the data: {exc}") from None
        *parents, leaf = key.digest.path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[int(part)]
        node[leaf] = digest
        return digest

    def _record(self, decisions: Sequence[Decision], now: float, latency_ms: float | None = None) -> None:
        for decision in decisions:
            self.log.record(decision, at=now, latency_ms=latency_ms)
            self.metrics.decisions.labels(decision.kind).inc()
            log(_log, decision.kind, event_id=decision.candidate.event_id, model=decision.candidate.model,
                key=decision.candidate.key, reason=decision.reason, run_id=decision.run_id, latency_ms=latency_ms)

    # --- starting runs -----------------------------------------------------------------------------

    def advance(self) -> None:
        """Free the slots of finished runs, close due windows, and submit every reserved run; repeat while
        a submitted run finished at once and so freed its slot for a queued one."""
        state = self._check_running(self.state, self.clock())
        while True:
            now = self.clock()
            outcome = tick(state, now=now, policy=self.policy)
            if outcome.decisions or outcome.state != self.state:
                with self.log.transaction():
                    self._record(outcome.decisions, now)
                    self.log.save_state(outcome.state)
                self.state = outcome.state
            reserved = [(m, s.candidate) for m, s in self.state.running.items() if s.run_id is None]
            freed = sum(self._submit(model, candidate) for model, candidate in reserved)
            if not freed or not self.state.queued:
                return
            state = self.state

    def _check_running(self, state: AdmissionState, now: float) -> AdmissionState:
        if now < self._next_status_check:
            return state
        self._next_status_check = now + self.status_interval_s
        for model, slot in state.running.items():
            if slot.run_id is None:
                continue
            try:
                status = self.engine.status(slot.run_id)
            except LookupError:
                status = "Error"
            if status in FINAL_STATUSES:
                state = finished(state, model)
        return state

    def _submit(self, model: str, candidate: Candidate) -> bool:
        """Submit a reserved run and record the outcome; True when the model's slot is free again."""
        request = RunRequest(model=candidate.model, data_uri=candidate.uri, trigger_event_id=candidate.event_id,
                             trigger=candidate.trigger, data_digest=candidate.digest or None, gpu=candidate.gpu)
        try:
            handle = self.engine.submit(request, wait=False)
        except AlreadyRan as exc:
            decision = Decision("deduped", f"engine refused: key already ran ({exc.run_id or 'unknown run'})",
                                candidate, run_id=exc.run_id or "unknown")
            state = finished(self.state, model)
        except Exception as exc:
            # Engine unavailable: the slot stays reserved and is submitted again on the next pass.
            self.metrics.submit_errors.inc()
            log(_log, "submit failed", level=logging.ERROR, model=model, key=candidate.key, error=str(exc))
            return False
        else:
            decision = Decision("triggered", f"run {handle.run_id} submitted", candidate, run_id=handle.run_id)
            state = started(self.state, model, handle.run_id)
            if handle.status in FINAL_STATUSES:
                state = finished(state, model)
        latency_s = max(0.0, time.time() - candidate.event_time)
        if decision.kind == "triggered":
            self.metrics.latency.observe(latency_s)
        now = self.clock()
        with self.log.transaction():
            self._record((decision,), now, latency_ms=latency_s * 1000)
            self.log.save_state(state)
        self.state = state
        return model not in state.running

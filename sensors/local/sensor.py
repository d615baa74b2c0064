"""LocalSensor: the cluster's Kafka sensors interpreted on one machine, over any `Bus`, onto any `Engine`;
calendar sensors tick from the same loop (`ctloop.sensors.local.calendar`, decided through `offer`).

Per consumed batch: parse (bad messages are dead-lettered), apply each sensor's filters and parameter
mapping exactly as rendered, run admission control, submit the runs it allows, and record every
decision with the admission state in one SQLite transaction. Offsets are committed only after an
fsync has made those records durable (batched every `commit_interval_s`).

What is already decided is known without a durable row per event:
- A crash anywhere before the commit redelivers the messages after the last committed offset. Each
  partition's highest decided offset (its watermark) is recorded in the same transaction as the
  decisions, so those messages are skipped before they are parsed, and counted as `redelivered`.
- A producer's duplicate (the same event id again, at a later offset) is known by a bounded in-memory
  map of the last `recent_events` decided ids and their content digests (~40 MB for the default 200,000
  UUID ids), rebuilt at start from the log:
  the same body is `redelivered`, another body is dead-lettered as an id reused.
- A duplicate of an event older than that bound is decided again, as a new event: its decision is
  recorded again (`deduped`, since its key already ran or is pending; `rejected` again if it was
  filtered out) and it is not counted as `redelivered`; an id reused with another body that far back is
  decided as a new event rather than dead-lettered. Its key still never starts a second run: the log's
  keys that ran and the engine both refuse it.
So a sensor killed at any instant loses no event and starts no run twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress, islice, repeat
from operator import attrgetter, itemgetter
from typing import Any

from msgspec.structs import replace

from ctloop.bus import Bus, Message
from ctloop.consume import Unroutable
from ctloop.crashpoints import crash_point
from ctloop.deadletter import DeadLetters
from ctloop.events import Brief, EventError, parse_brief
from ctloop.sensors.admission import (
    AdmissionPolicy,
    AdmissionState,
    Candidate,
    Decision,
    admit_all,
    finished,
    new_candidate,
    tick,
    unknown_trigger,
)
from ctloop.sensors.eventdata import MISSING, PathMissing, find, kafka_event_data
from ctloop.sensors.filters import failed, rejection
from ctloop.sensors.local.calendar import Calendar
from ctloop.sensors.local.decisions import DecisionLog
from ctloop.sensors.local.jsonlog import log
from ctloop.sensors.local.metrics import SensorMetrics
from ctloop.sensors.local.route import GENERAL, Route
from ctloop.sensors.mapping import MappingError, parameters, resolve
from ctloop.sensors.spec import CalendarSource, KafkaSource, KeyOf, SensorSpec, check_path
from ctloop.settings import Settings
from ctloop.stopping import until_signalled
from ctloop.workflows.engine import FINAL_STATUSES, AlreadyRan, Engine, RunRequest

DigestResolver = Callable[[str], str]

Record = tuple[Decision, float | None]  # a decision and, for a submitted run, its event-to-trigger latency
_log = logging.getLogger("ctloop.sensor")
_partition = attrgetter("topic", "partition")  # a message's (topic, partition), read in C
_decided, _kind = itemgetter(0), attrgetter("kind")  # a record's decision, a decision's kind
_key = attrgetter("key")  # a candidate's idempotency key
_TRIGGERED = "triggered"
# A run request validated from its fields without `BaseModel.__init__`'s frame (~0.5 µs a run less).
_request = RunRequest.__pydantic_validator__.validate_python
_decision = tuple.__new__  # a `Decision` made in C, as admission makes them: `_decision(Decision, fields)`


def snapshot_digest(settings: Settings) -> DigestResolver:
    """How a sensor names the data of an event that carries no digest: by snapshotting its URI."""

    def digest_of(uri: str) -> str:
        from ctloop.snapshot import take_snapshot

        snapshot = take_snapshot(uri, s3_endpoint_url=settings.s3_endpoint_url)
        if not snapshot.objects:
            raise ValueError(f"no data objects under {uri}")
        return snapshot.digest

    return digest_of


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
        commit_interval_s: float = 0.05,
        recent_events: int = 200_000,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.policy = policy or AdmissionPolicy()
        self.metrics = metrics or SensorMetrics()
        self.clock = clock
        self.batch_size = batch_size
        self.status_interval_s = status_interval_s
        self.commit_interval_s = commit_interval_s
        self._uncommitted: dict[tuple[str, int], Message] = {}
        self._last_commit = time.monotonic()
        self._resolve_digest = resolve_digest
        self._by_topic: dict[str, list[Route]] = {}
        scheduled = [spec for spec in specs if isinstance(spec.dependency.source, CalendarSource)]
        for spec in specs:
            if isinstance(spec.dependency.source, CalendarSource):
                continue
            if not isinstance(spec.dependency.source, KafkaSource):
                raise ValueError(f"sensor {spec.name} reads {type(spec.dependency.source).__name__}; "
                                 "LocalSensor interprets Kafka- and calendar-sourced sensors only")
            self._by_topic.setdefault(spec.dependency.source.topic, []).append(Route.of(spec))
        # Topics whose every sensor decides from the message body alone (`Route.decide`).
        self._fast = {topic: tuple(routes) for topic, routes in self._by_topic.items()
                      if all(route.decide is not None for route in routes)}
        self.log = DecisionLog(settings.state_db, group)
        # Calendar sensors tick from this loop: see `_fire_ticks` and `ctloop.sensors.local.calendar`.
        self.calendar = Calendar(settings.state_db, group, scheduled)
        self.state: AdmissionState = self.log.load_state()
        # Producer duplicates are known by id for the last `recent_events` events (see the module's note).
        self.recent_events = recent_events
        self._recent: dict[str, str] = self.log.recent_digests(recent_events)
        # Exactly one dead letter per bad message, even when a crash redelivers it (before consuming).
        self.dead_letters = DeadLetters(bus, settings.topics.deadletter, settings.state_db)
        self.dead_letters.recover()
        self._consumer = bus.consumer(sorted(self._by_topic), group)
        self._next_status_check = 0.0
        self._engine_down_until = 0.0
        self._engine_backoff_s = 0.0

    # --- the loop ----------------------------------------------------------------------------------

    def step(self, timeout_s: float = 0.1) -> int:
        """Fire due calendar ticks, consume one batch (waiting up to `timeout_s`), then start whatever
        admission allows."""
        self._fire_ticks()
        messages = self._consumer.poll(timeout_s=timeout_s, max_records=self.batch_size)
        if messages:
            self._consume(messages)
        else:
            self.advance()
        if self._uncommitted and (not messages or time.monotonic() - self._last_commit >= self.commit_interval_s):
            self.commit()
        return len(messages)

    def run(self, should_stop: Callable[[], bool], poll_timeout_s: float = 0.1) -> None:
        while not should_stop():
            self.step(poll_timeout_s)

    def run_until_signalled(self, poll_timeout_s: float = 0.1) -> None:
        """Run until SIGTERM or SIGINT, then close: the batch in hand is finished and committed first."""
        until_signalled(lambda should_stop: self.run(should_stop, poll_timeout_s), self.close)

    def close(self) -> None:
        self.commit()
        self._consumer.close()
        self.calendar.close()
        self.dead_letters.close()
        self.log.close()

    # --- consuming ---------------------------------------------------------------------------------

    def _consume(self, messages: list[Message]) -> None:
        """Decide the batch, submit what may start, record it all durably, then commit the offsets.

        Each message is parsed once; which events were seen before and which keys already ran are looked
        up for the whole batch, admission decides the batch in one pass, and the records are written in
        one transaction. Submitting before the record is safe: after a crash the batch is redelivered and
        decided again, and the engine refuses a key it already has. It keeps the fsync out of the trigger
        latency."""
        now = self.clock()
        self.metrics.events_in.inc(len(messages))
        # Read per batch, not once: another process of the group may have decided a partition since.
        decided = self.log.watermarks()
        # Each partition's first and last message, found in C loops: a partition's messages come in order (as the
        # watermark and the commit, which take its last, assume).
        partitions = list(map(_partition, messages))
        last = dict(zip(partitions, messages, strict=True))
        first = dict(zip(reversed(partitions), reversed(messages), strict=True))
        if all(decided.get(at, -1) < m.offset for at, m in first.items()):
            new = messages  # the usual batch: nothing in it decided before
        else:
            new = [m for at, m in zip(partitions, messages, strict=True) if m.offset > decided.get(at, -1)]
        redelivered = len(messages) - len(new)
        max_bytes, fast, recent = self.settings.max_event_bytes, self._fast, self._recent
        snapshots = self._resolve_digest is not None
        fresh: dict[str, str] = {}
        candidates: list[Candidate] = []
        rejected: list[tuple[str, str | None, str]] = []
        for message in new:
            try:
                brief = parse_brief(message.value, max_bytes=max_bytes)
            except EventError as exc:
                self._dead_letter(message, exc.reason)
                continue
            event_id, digest = brief.id, brief.digest
            before = fresh.get(event_id)
            if before is None:
                before = recent.get(event_id)
            if before is not None:
                if before == digest or before == "":
                    redelivered += 1
                else:
                    # Not a redelivery: a producer reused an id. Taking it as one would drop it silently.
                    self._dead_letter(message, f"event id {event_id} reused with a different body")
                continue
            # Routed only once known to be new: a redelivery is neither snapshotted again nor
            # dead-lettered because its data has gone since it was decided.
            routes = fast.get(message.topic)
            event_time = message.timestamp_ms / 1000 if message.timestamp_ms else brief.time
            try:
                if routes is None:
                    routed = self._candidate(brief, message, event_time)
                else:
                    # The first route asked here, a call less an event; the rest, or the general route, by `_routed`.
                    routed = routes[0].decide(brief.document, event_time, brief.gpu, snapshots)
                    if type(routed) is not Candidate:
                        routed = self._routed(routes, brief, message, event_time, snapshots, routed)
            except Unroutable as exc:
                self._dead_letter(message, f"unroutable: {exc}")
                continue
            fresh[event_id] = digest
            if type(routed) is str:
                rejected.append((event_id, brief.model, routed))
            else:
                candidates.append(routed)
        if redelivered:
            self.metrics.redelivered.inc(redelivered)
        ran = self.log.ran(set(map(_key, candidates))) if candidates else set()
        admitted = admit_all(self.state, candidates, ran=ran, now=now, policy=self.policy)
        state, launched = self._launch(admitted.state)
        records = [*zip(admitted.decisions, repeat(None)), *launched]
        with self.log.transaction(durable=False):
            self.log.record_rejections(rejected, at=now)
            self._write(records, state, now)
            self.log.mark_seen(fresh, at=now)
            self.log.advance({at: m.offset for at, m in last.items()})
        crash_point("decision-recorded")
        self._remember(fresh)
        self.metrics.filtered.inc(len(rejected))
        self._observe(records)
        self.state = state
        self._uncommitted.update(last)

    def _remember(self, decided: dict[str, str]) -> None:
        """Add newly decided events to the map of recent ids; past its bound by a quarter, keep the newest."""
        recent = self._recent
        recent.update(decided)
        if len(recent) > self.recent_events + max(self.recent_events // 4, self.batch_size):
            # Rebuilt in one go rather than popped one at a time: a dict's oldest entry is slow to find
            # after many deletions.
            keep = islice(recent.items(), len(recent) - self.recent_events, None)
            self._recent = dict(keep)

    def commit(self) -> None:
        """Make every decision so far durable (one fsync), then commit the consumed offsets.

        Batches are written without an fsync and committed together every `commit_interval_s`:
        the durability point is here, before the offsets move, which is all at-least-once needs."""
        if not self._uncommitted:
            return
        with self.log.transaction():
            self.log.save_state(self.state)
        for message in self._uncommitted.values():
            self._consumer.commit(message)
        crash_point("offset-committed")
        self._uncommitted.clear()
        self._last_commit = time.monotonic()

    def _dead_letter(self, message: Message, reason: str) -> None:
        if not self.dead_letters.send(message, reason):
            return  # a redelivery of a message already dead-lettered
        self.metrics.dead_lettered.inc()
        log(_log, "dead-lettered", level=logging.WARNING, topic=message.topic, partition=message.partition,
            offset=message.offset, reason=reason)

    def _routed(self, routes: tuple[Route, ...], brief: Brief, message: Message, event_time: float, snapshots: bool,
                first: Any) -> Candidate | str:
        """`_candidate` through the routes' body-only `decide`, given the first route's answer (`first`): the
        same candidate, reason or `Unroutable`."""
        refused = []
        for n, route in enumerate(routes):
            routed = first if n == 0 else route.decide(brief.document, event_time, brief.gpu, snapshots)
            if type(routed) is Candidate:
                return routed
            if routed is GENERAL:
                return self._candidate(brief, message, event_time)
            refused.append((route, routed))
        data = kafka_event_data(message, brief.document)
        return "; ".join(f"{route.spec.name}: {failed(f, data)}" for route, f in refused)

    def _candidate(self, brief: Brief, message: Message, event_time: float) -> Candidate | str:
        """The candidate run of the first sensor whose filters pass, or why none did; `event_time` is the
        record's timestamp, or the event's `time` where the record has none."""
        routes = self._by_topic.get(message.topic, [])
        data = kafka_event_data(message, brief.document)
        context = {"id": brief.id, "type": brief.type, "source": brief.source, "subject": brief.subject or ""}
        reasons = []
        for route in routes:
            spec = route.spec
            why = route.rejection(data)
            if why:
                reasons.append(f"{spec.name}: {why}")
                continue
            path = route.digest_path
            found = MISSING if path is None else find(data, path)
            # The usual event carries its digest: read here; the rest (none in the key, or a snapshot) below.
            digest = str(found) if found is not MISSING and found else self._digest(spec, data, context, path)
            params = route.parameters(data, context)
            trigger = params["trigger"]
            if (unknown := unknown_trigger(trigger)) is not None:
                raise Unroutable(f"{spec.name}: {unknown}")
            return new_candidate(event_id=params["event-id"], model=params["model"], key=params["idempotency-key"],
                                 uri=params["data-uri"], digest=digest, trigger=trigger, gpu=brief.gpu,
                                 event_time=event_time)
        return "; ".join(reasons) or f"no sensor listens on {message.topic}"

    def _digest(self, spec: SensorSpec, data: dict[str, Any], context: dict[str, str],
                path: tuple[str, ...] | None = None) -> str:
        """The event's data digest (at `path`, the key's digest path split); when absent, resolved by
        snapshotting the URI and written into the event data, so the key the mapping computes names the data
        rather than the event."""
        key = spec.params["idempotency-key"]
        if not isinstance(key, KeyOf):
            return ""
        digest = find(data, path or check_path(key.digest.path))
        if digest is MISSING:
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

    def _write(self, records: Sequence[Record], state: AdmissionState, now: float) -> None:
        """Decisions and the admission state, inside the caller's transaction."""
        self.log.record(records, at=now)
        self.log.save_state(state)

    def _observe(self, records: Sequence[Record]) -> None:
        """Metrics and logs, once the records are written.

        A line per run started, and per batch the count of each kind of decision, at INFO; a line per
        decision only at DEBUG: a storm would otherwise log twice per event (`ctloop events list` has them)."""
        kinds = list(map(_kind, map(_decided, records)))
        counts = Counter(kinds)
        for kind, count in counts.items():
            self.metrics.by_kind[kind].inc(count)
        # Only runs started are timed and logged at INFO: read them out once (a storm's few among many), in C.
        started = list(compress(records, map(_TRIGGERED.__eq__, kinds))) if counts[_TRIGGERED] else []
        if started:
            self.metrics.latency.observe_all([latency_s for _, latency_s in started if latency_s is not None])
        if not _log.isEnabledFor(logging.INFO):
            return
        each = _log.isEnabledFor(logging.DEBUG)
        for decision, latency_s in records if each else started:
            c = decision.candidate
            log(_log, decision.kind, level=logging.INFO if decision.kind == "triggered" else logging.DEBUG,
                event_id=c.event_id, model=c.model, key=c.key, reason=decision.reason, run_id=decision.run_id,
                latency_ms=None if latency_s is None else round(latency_s * 1000, 3))
        if not each and counts.keys() - {"triggered"}:
            log(_log, "decided", **{kind: counts[kind] for kind in sorted(counts)})

    # --- starting runs -----------------------------------------------------------------------------

    def advance(self) -> None:
        """Free the slots of finished runs, close due windows, and submit every reserved run."""
        state, records = self._launch(self._check_running(self.state, self.clock()))
        if records or state != self.state:
            # Not fsynced: lost with the machine, these are rebuilt on restart (a window re-closes,
            # a reserved run is resubmitted and refused by the engine if it already started).
            with self.log.transaction(durable=False):
                self._write(records, state, self.clock())
            self._observe(records)
            self.state = state

    def _launch(self, state: AdmissionState) -> tuple[AdmissionState, list[Record]]:
        """Tick admission and submit the reserved runs, in memory; repeat while a run that finished at
        once freed its model for a queued candidate."""
        records: list[Record] = []
        while True:
            outcome = tick(state, now=self.clock(), policy=self.policy)
            state = outcome.state
            records.extend((d, None) for d in outcome.decisions)
            freed = False
            # The slots this pass settles, applied in one copy of the state (`started`/`finished` in bulk):
            # a storm submits a run for every model at once.
            running = None
            for model, slot in state.running.items():
                if slot.run_id is not None or time.monotonic() < self._engine_down_until:
                    continue
                result = self._submit(slot.candidate)
                if result is None:
                    # Back off while the engine is down rather than hammer it on every poll.
                    self._engine_backoff_s = min(30.0, max(0.5, self._engine_backoff_s * 2))
                    self._engine_down_until = time.monotonic() + self._engine_backoff_s
                    continue
                self._engine_backoff_s = 0.0
                decision, status = result
                records.append((decision, max(0.0, time.time() - slot.candidate.event_time)))
                if running is None:
                    running = dict(state.running)
                if decision.kind != "triggered" or status in FINAL_STATUSES:
                    del running[model]  # `finished`: started and already over
                    freed = True
                else:
                    running[model] = replace(slot, run_id=decision.run_id or "unknown")  # `started`
            if running is not None:
                state = state.model_copy(update={"running": running})
            if not freed or not state.queued:
                return state, records

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

    def _submit(self, candidate: Candidate) -> tuple[Decision, str] | None:
        """Submit a reserved run: its decision and the engine's status, or None when the engine failed.

        Recorded after the fact: a crash in between leaves the slot reserved, and the resubmission on
        restart is refused by the engine (AlreadyRan) rather than run twice."""
        request = _request({"model": candidate.model, "data_uri": candidate.uri,
                            "trigger_event_id": candidate.event_id, "trigger": candidate.trigger,
                            "data_digest": candidate.digest or None, "gpu": candidate.gpu,
                            "idempotency_key": candidate.key})
        try:
            handle = self.engine.submit(request, wait=False)
        except AlreadyRan as exc:
            reason = f"engine refused: key already ran ({exc.run_id or 'unknown run'})"
            return _decision(Decision, ("deduped", reason, candidate, exc.run_id or "unknown")), "Skipped"
        except Exception as exc:
            # Engine unavailable: the slot stays reserved and is submitted again on the next pass.
            self.metrics.submit_errors.inc()
            log(_log, "submit failed", level=logging.ERROR, model=candidate.model, key=candidate.key, error=str(exc))
            return None
        run_id = handle.run_id
        return _decision(Decision, ("triggered", f"run {run_id} submitted", candidate, run_id)), handle.status

    # --- events from no bus: calendar ticks --------------------------------------------------------

    def _fire_ticks(self) -> None:
        for due in self.calendar.due(self.clock()):
            self.offer(due.spec, due.data, due.context, event_time=due.at.timestamp(), gpu=due.gpu)
            self.calendar.fired(due)

    def offer(self, spec: SensorSpec, data: dict[str, Any], context: dict[str, str], *, event_time: float,
              gpu: bool = False) -> tuple[Decision, ...]:
        """Decide one event that no bus delivered (a calendar tick) as a consumed one is decided: filters,
        digest (snapshot), mapping, admission and submission, recorded durably before it returns. An id
        already decided is a no-op, so offering it again after a crash starts nothing twice."""
        event_id = context["id"]
        if event_id in self._recent:
            return ()
        now = self.clock()
        state, records = self.state, []
        refusal = rejection(spec.dependency, data)
        if refusal is not None:
            refusal = f"{spec.name}: {refusal}"
        else:
            try:
                digest = self._digest(spec, data, context)
                params = parameters(spec, data, context)
            except Unroutable as exc:
                refusal = str(exc)
            except MappingError as exc:
                refusal = f"{spec.name}: {exc}"
            else:
                if (unknown := unknown_trigger(params["trigger"])) is not None:
                    refusal = f"{spec.name}: {unknown}"  # refused here, not saved in a state that would not load
        if refusal is None:
            candidate = new_candidate(event_id=params["event-id"], model=params["model"],
                                      key=params["idempotency-key"], uri=params["data-uri"], digest=digest,
                                      trigger=params["trigger"], gpu=gpu, event_time=event_time)
            outcome = admit_all(state, [candidate], ran=self.log.ran([candidate.key]), now=now, policy=self.policy)
            records.extend((d, None) for d in outcome.decisions)
            state, launched = self._launch(outcome.state)
            records.extend(launched)
        with self.log.transaction():
            self.log.mark_seen({event_id: ""}, at=now)
            if refusal is not None:
                self.log.record_rejections([(event_id, _model_of(spec, data, context), refusal)], at=now)
            self._write(records, state, now)
        self._remember({event_id: ""})
        self._observe(records)
        self.state = state
        return tuple(decision for decision, _ in records)


def _model_of(spec: SensorSpec, data: dict[str, Any], context: dict[str, str]) -> str | None:
    try:
        return resolve(spec.params["model"], data, context)
    except (PathMissing, MappingError):
        return None

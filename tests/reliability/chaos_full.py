"""Full-template chaos: the production retrain template (snapshot → validate → train → evaluate →
promote/register) run by a sensor+engine process on a real broker and a real `mlflow server`, with three
kinds of fault in one run: SIGKILLs of the sensor/engine process inside chosen steps, a SIGKILL of the
broker while messages are in flight (restarted on the same port), and a SIGKILL of the registry while a
step talks to it (restarted on the same port). Then it is audited from the outside
(`tests/reliability/outside_audit.py`): the registry's versions and audit trail, the bus's topics.

Shared by tests/reliability/test_chaos_full_template.py and bench/chaos.py.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ctloop.crashpoints import ENV
from ctloop.deploy.registry import Registry
from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.kafka_local import LocalKafka
from ctloop.modelspec import save_spec
from ctloop.settings import Settings
from ctloop.snapshot import take_snapshot
from tests.fixtures.mlflow_server import MlflowServer
from tests.reliability.chaos import (
    GARBAGE,
    Arrival,
    Workload,
    _decided_ids,
    _env,
    _log_tail,
    _process,
    _Publisher,
    _query,
    _wait,
    _wait_settled,
    chaos_settings,
)
from tests.reliability.outside_audit import Expected, Figures, audit, triggered_events
from tests.trainer.conftest import make_frame, make_spec

PROCESS = [sys.executable, "-m", "tests.reliability.chaos_full_process"]
REGISTRY_STEPS = ("train", "evaluate", "promote", "register")


@dataclass(frozen=True)
class Plan:
    """What to break, in order: each round runs one sensor process that is SIGKILLed inside the round's
    target step (a step name, `a|b` for either, or `crash:<point>` for a process armed to SIGKILL itself at
    that crash point, see ctloop.crashpoints); the broker and the registry are killed in the rounds named."""

    targets: tuple[str, ...] = ("crash:step-output-written@2", "train", "evaluate", "promote|register")
    broker_kill_rounds: tuple[int, ...] = (1,)
    registry_kill_rounds: tuple[int, ...] = (2,)
    models: int = 3
    batches: int = 3  # distinct data sets per model
    rows: int = 300
    epochs: int = 2
    # How often the engine starts a run its process's death interrupted again: `ctloop sensor run` allows 2, a
    # poison-run guard; a run hit by more kills than that is abandoned and its data counted lost.
    retry_interrupted: int = 2
    target_wait_s: float = 60.0  # how long a kill waits for its target step
    round_timeout_s: float = 120.0
    settle_timeout_s: float = 300.0


@dataclass(frozen=True)
class Kill:
    kind: str  # "engine", "broker", "registry"
    round: int
    during: str  # the step (or what) it landed in
    recovery_s: float | None  # kill to the next durable progress (None: the kill did not land)


@dataclass
class Outcome:
    """What the run did; `audit` is the outside audit's figures."""

    settings: Settings
    work: Workload
    kills: list[Kill] = field(default_factory=list)
    seconds: float = 0.0
    events_decided: int = 0  # distinct valid events published that the sensor's log has a decision for
    audit: Figures | None = None

    @property
    def events(self) -> int:
        return len({a.event_id for a in self.work.arrivals})


def write_data(root: Path, plan: Plan, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Per model, `plan.batches` data sets of its own, each a directory with one parquet file: (uri, digest)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for m in range(plan.models):
        model = f"chaos{m}"
        for b in range(plan.batches):
            directory = root / model / f"batch-{b}"
            directory.mkdir(parents=True, exist_ok=True)
            make_frame(plan.rows, seed=rng.randrange(1 << 30)).to_parquet(directory / "part-0.parquet", index=False)
            uri = directory.as_uri()
            out.setdefault(model, []).append((uri, take_snapshot(uri).digest))
    return out


def full_workload(data: dict[str, list[tuple[str, str]]], rng: random.Random) -> Workload:
    """The data sets' arrivals, interleaved across models in order; about 1 in 5 followed later by a
    redelivery (same id), 1 in 5 by the same data under a new id; and 3 garbage messages."""
    out = Workload()
    waves = max(len(sets) for sets in data.values())
    for wave in range(waves):
        for model, sets in data.items():
            if wave < len(sets):
                uri, digest = sets[wave]
                out.messages.append(_arrival(model, uri, digest, f"{model}-b{wave}"))
    for n, arrival in enumerate(list(out.arrivals)):
        roll = rng.random()
        if roll < 0.4:
            again = arrival if roll < 0.2 else _arrival(arrival.model, arrival.uri, arrival.digest,
                                                         f"{arrival.event_id}-again{n}")
            after = out.messages.index(arrival) + 1
            out.messages.insert(rng.randrange(after, len(out.messages) + 1), again)
    for message in GARBAGE:
        out.messages.insert(rng.randrange(1, len(out.messages) + 1), message)
    return out


def _arrival(model: str, uri: str, digest: str, event_id: str) -> Arrival:
    payload = DataArrived(model=model, uri=uri, digest=digest)
    return Arrival(model, digest, event_id, to_bytes(new_event(payload, id=event_id)), uri)


class ResilientPublisher(_Publisher):
    """Publishes in the background, one acknowledged message at a time; a broker that dies mid-send costs a
    reconnect and a resend from the last acknowledged message (at least once: the same ids again)."""

    def __init__(self, bootstrap: str, topic: str, pace_s: float = 0.3) -> None:
        super().__init__(bootstrap, topic, pace_s)
        self.bootstrap, self.default_pace_s = bootstrap, pace_s
        self.sent = 0  # messages of the current chunk acknowledged
        self.resends = 0

    def send(self, chunk: list[Arrival | bytes], pace_s: float | None = None) -> None:
        self.join()
        self.sent = 0
        self.pace_s = self.default_pace_s if pace_s is None else pace_s
        super().send(chunk)

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _send(self, chunk: list[Arrival | bytes]) -> None:
        deadline = time.monotonic() + 300
        while self.sent < len(chunk):
            try:
                message = chunk[self.sent]
                value = message.value if isinstance(message, Arrival) else message
                self.bus.publish(self.topic, value, key=message.model if isinstance(message, Arrival) else None)
                self.bus.flush(timeout_s=30)
                self.sent += 1
                time.sleep(self.pace_s)
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.error = exc
                    return
                self.resends += 1
                self._reconnect()

    def _reconnect(self) -> None:
        # A producer of a dead broker may fail to close; it is dropped anyway.
        with contextlib.suppress(Exception):
            self.bus.close()
        while True:
            try:
                self.bus = KafkaBus(self.bootstrap, client_id="ctloop-chaos-publisher")
                return
            except Exception:  # the broker is still down: try again
                time.sleep(0.5)


def _step_running(db: Path, names: set[str], since: float) -> str | None:
    """A step of `names` started after `since` (wall clock) and running now, if any: one a killed process left
    marked Running is not."""
    marks = ",".join("?" * len(names))
    rows = _query(db, f"SELECT name FROM wf_steps WHERE status = 'Running' AND started_at > ? AND name IN"
                      f" ({marks})", (since, *names))
    return rows[0][0] if rows else None


def _progress(db: Path) -> tuple[int, int]:
    """(events decided, steps finished): durable progress from the sensor's and the engine's records."""
    decided = _query(db, "SELECT COUNT(*) FROM sensor_decisions")
    steps = _query(db, "SELECT COUNT(*) FROM wf_steps WHERE status IN ('Succeeded', 'Skipped')")
    return (int(decided[0][0]) if decided else 0, int(steps[0][0]) if steps else 0)


def _within(done: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `done` came true within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_full_chaos(root: Path, plan: Plan, rng: random.Random, *, broker: LocalKafka, registry: MlflowServer
                   ) -> Outcome:
    """The whole run: data and specs, the rounds of the plan, a last process until everything settled, then
    the audit from the outside."""
    started = time.monotonic()
    settings = chaos_settings(root / "home", broker.bootstrap).model_copy(
        update={"mlflow_tracking_uri": registry.url})
    for m in range(plan.models):
        save_spec(make_spec(name=f"chaos{m}", epochs=plan.epochs), settings)
    work = full_workload(write_data(root / "data", plan, rng), rng)
    outcome = Outcome(settings, work)
    env = _env(settings)
    db = settings.state_db
    rounds = len(plan.targets)
    size = -(-len(work.messages) // (rounds + 1))
    chunks = [work.messages[i * size:(i + 1) * size] for i in range(rounds + 1)]
    publisher = ResilientPublisher(settings.kafka_bootstrap, settings.topics.data)
    distinct = len({a.event_id for a in work.arrivals})
    killed: tuple[Kill, float, tuple[int, int]] | None = None  # the last engine kill, when, progress then
    try:
        for k in range(rounds + 1):
            last = k == rounds
            target = None if last else plan.targets[k]
            crash_at = target.removeprefix("crash:") if target and target.startswith("crash:") else None
            since = time.time()
            with _process([*PROCESS, str(plan.retry_interrupted)], {**env, ENV: crash_at} if crash_at else env,
                          settings.home / f"sensor-{'final' if last else k}.log",
                          stop=signal.SIGTERM if last else signal.SIGKILL) as proc:
                broker_round = k in plan.broker_kill_rounds
                # A broker round first sends up to its first new event, whose decision shows the sensor consuming.
                head = _first_new(chunks[k], {m.event_id for c in chunks[:k] for m in c if isinstance(m, Arrival)})
                publisher.send(chunks[k][:head] if broker_round else chunks[k])
                if killed is not None:
                    kill, at, progress = killed
                    # Recovery: the next process finished a step (None: it had nothing left to do in time).
                    moved = _within(lambda p=progress: _progress(db)[1] > p[1], plan.target_wait_s)
                    outcome.kills.append(replace(kill, recovery_s=time.monotonic() - at if moved else None))
                    killed = None
                # The registry first, while the round's first runs are under way; the broker then has the rest.
                if k in plan.registry_kill_rounds:
                    outcome.kills.append(_kill_registry(registry, db, proc, k, plan, since))
                if broker_round:
                    outcome.kills.append(_kill_broker(broker, publisher, chunks[k][:head], chunks[k][head:], db,
                                                      proc, k, plan))
                if last:
                    publisher.join()
                    _wait_settled(db, distinct, proc, plan.settle_timeout_s)
                elif crash_at:
                    killed = _crashed(proc, db, crash_at, k, plan)
                else:
                    killed = _kill_engine(proc, db, target, k, plan, since)
    finally:
        publisher.close()
    outcome.seconds = time.monotonic() - started
    ids = {a.event_id for a in work.arrivals}
    outcome.events_decided = len(ids & _decided_ids(db))
    outcome.audit = audit_outside(settings, work)
    return outcome


def _kill_engine(proc, db: Path, target: str, k: int, plan: Plan, since: float) -> tuple[Kill, float, tuple[int, int]]:
    """SIGKILL the sensor/engine process while a step of `target` runs (after `plan.target_wait_s` without one,
    wherever it is). Its recovery (to the next step finished, by the next process) is measured by the caller."""
    names = set(target.split("|"))
    hit = _within(lambda: _step_running(db, names, since) is not None, plan.target_wait_s)
    during = (_step_running(db, names, since) or target) if hit else f"no {target} step running"
    progress = _progress(db)
    proc.send_signal(signal.SIGKILL)
    at = time.monotonic()
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"round {k}: the sensor process had exited ({proc.returncode}) before its SIGKILL:\n"
                           f"{_log_tail(proc)}")
    return Kill("engine", k, during, None), at, progress


def _crashed(proc, db: Path, point: str, k: int, plan: Plan) -> tuple[Kill, float, tuple[int, int]]:
    """The process armed to SIGKILL itself at crash point `point`: wait for it to do so (after
    `plan.round_timeout_s` without, SIGKILL it wherever it is; the kill says so)."""
    progress = _progress(db)
    deadline = time.monotonic() + plan.round_timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        progress = _progress(db)
        time.sleep(0.05)
    during = f"crash point {point}"
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        during = f"crash point {point} not reached in {plan.round_timeout_s:.0f} s; killed"
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"round {k}: the process exited with {proc.returncode}, not at {point}:\n{_log_tail(proc)}")
    return Kill("engine", k, during, None), time.monotonic(), progress


def _first_new(chunk: list[Arrival | bytes], earlier: set[str]) -> int:
    """How many messages of `chunk` up to and including its first event not sent before (all: none is new)."""
    for i, message in enumerate(chunk):
        if isinstance(message, Arrival) and message.event_id not in earlier:
            return i + 1
    return len(chunk)


def _kill_broker(broker: LocalKafka, publisher: ResilientPublisher, head: list[Arrival | bytes],
                 rest: list[Arrival | bytes], db: Path, proc, k: int, plan: Plan) -> Kill:
    """Once the sensor consumes (it decided the new event that ends `head`), send the `rest` slowly and SIGKILL
    the broker when the first of them is acknowledged, with the others still to go; restart it on the same
    port. Recovery: until the rest is published and each of its events decided."""
    fresh = {m.event_id for m in head if isinstance(m, Arrival)}
    _wait(lambda: fresh <= _decided_ids(db), proc, plan.round_timeout_s, "the sensor consuming", poll_s=0.05)
    publisher.send(rest, pace_s=1.0)
    _wait(lambda: publisher.sent > 0 or not publisher.busy, proc, plan.round_timeout_s, "a message acknowledged",
          poll_s=0.05)
    in_flight = publisher.busy
    at = time.monotonic()
    broker.kill()
    time.sleep(1.0)
    broker.start()
    ids = {m.event_id for m in rest if isinstance(m, Arrival)}
    _wait(lambda: not publisher.busy and ids <= _decided_ids(db), proc, plan.round_timeout_s,
          "every event of the round published and decided after the broker kill", poll_s=0.05)
    return Kill("broker", k, "publishing" if in_flight else "idle", time.monotonic() - at)


def _kill_registry(registry: MlflowServer, db: Path, proc, k: int, plan: Plan, since: float) -> Kill:
    """SIGKILL the mlflow server while a step that talks to it runs (after `plan.target_wait_s` without one,
    anyway); restart it on the same port. Recovery: to the next step that finished."""
    hit = _within(lambda: _step_running(db, set(REGISTRY_STEPS), since) is not None, plan.target_wait_s)
    during = (_step_running(db, set(REGISTRY_STEPS), since) or "?") if hit else "no registry step running"
    progress = _progress(db)
    at = time.monotonic()
    registry.kill()
    time.sleep(1.0)
    registry.start()
    moved = _within(lambda: _progress(db)[1] > progress[1], plan.round_timeout_s)
    return Kill("registry", k, during, time.monotonic() - at if moved else None)


def expected_of(settings: Settings, work: Workload, bus: KafkaBus) -> Expected:
    """What must hold afterwards, from what was published and the sensor's public record: each model's newest
    data set, and every data set the sensor started a run for, registered; each garbage message on the data
    topic (wherever the resending put copies of it) dead-lettered once."""
    triggered = triggered_events(settings.state_db)
    newest = {a.model: (a.model, a.digest) for a in work.arrivals}
    started = {(a.model, a.digest) for a in work.arrivals if a.event_id in triggered}
    garbage = {(m.topic, m.partition, m.offset) for m in bus.read_all(settings.topics.data) if m.value in GARBAGE}
    return Expected(registrations=frozenset(started | set(newest.values())), bad_messages=frozenset(garbage))


def audit_outside(settings: Settings, work: Workload) -> Figures:
    """The outside audit of a chaos run: registry, bus, and the sensor's decision log."""
    bus = KafkaBus(settings.kafka_bootstrap, client_id="ctloop-chaos-audit")
    try:
        return audit(Registry(settings.tracking_uri), bus, models={a.model for a in work.arrivals},
                     models_topic=settings.topics.models, deadletter_topic=settings.topics.deadletter,
                     expected=expected_of(settings, work, bus), state_db=settings.state_db)
    finally:
        bus.close()


def table(outcome: Outcome) -> str:
    """The run as markdown: the kills and their recoveries, then the outside audit's figures."""
    lines = ["| kill | round | landed during | recovery |", "|---|---|---|---|"]
    for k in outcome.kills:
        recovery = f"{k.recovery_s:.1f} s" if k.recovery_s is not None else "n/a"
        lines.append(f"| {k.kind} | {k.round} | {k.during} | {recovery} |")
    f = outcome.audit
    assert f is not None
    rows = [
        ("messages published (redeliveries, garbage included)", len(outcome.work.messages)),
        ("distinct valid events / with a decision", f"{outcome.events} / {outcome.events_decided}"),
        ("data sets that must be registered / lost", f"{f.expected_registrations} / {f.lost}"),
        ("versions registered / duplicate registrations", f"{f.versions} / {f.duplicate_registrations}"),
        ("alias moves / duplicate / unannounced / unexplained",
         f"{f.alias_moves} / {f.duplicate_alias_moves} / {f.unannounced_alias_moves} / {f.unexplained_alias_moves}"),
        ("announcements (repeats) / phantom", f"{f.announcements} ({f.repeated_announcements}) / "
                                              f"{f.phantom_announcements}"),
        ("bad messages / dead letters (all) / not exactly once",
         f"{f.bad_messages} / {f.dead_letters} / {f.dead_lettered_not_once}"),
        ("wall time", f"{outcome.seconds:.0f} s"),
    ]
    lines += ["", "| outside audit | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    lines += [f"PROBLEM: {p}" for p in f.problems]
    return "\n".join(lines)

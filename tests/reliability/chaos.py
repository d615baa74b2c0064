"""Crash-anywhere harness: arrivals flow into a sensor+engine process that is SIGKILLed at random points
and restarted, optionally while the broker restarts; then the durable records are audited.

Shared by tests/reliability/test_crash_anywhere.py, test_broker_restart.py and bench/chaos.py; the full-template
run (chaos_full.py) uses its sensor processes, publisher, waits and settle check. The audit reads only what the
components recorded: the sensor's decision log, the engine's run store, and the bus itself (every message
in the dead-letter topic, none de-duplicated, matched to where each garbage message landed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ctloop.app.demo.runner import settings_env
from ctloop.deadletter import origin_of
from ctloop.events import DataArrived, new_event, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.settings import Settings, Topics
from ctloop.version import code_version
from ctloop.workflows.engine import idempotency_key
from tests.reliability.cheap_template import TRAIN_STEP

REPO = Path(__file__).resolve().parents[2]
GARBAGE = (b"\xff\xfe not json", b"{}", b'{"specversion": "1.0", "id": "x", "type": "ctloop.nope", "source": "t"}')


@dataclass(frozen=True)
class Arrival:
    model: str
    digest: str
    event_id: str
    value: bytes
    uri: str = ""  # where the data is, for a workload whose data exists (the full template's)


@dataclass
class Workload:
    """What was published: valid arrivals (redeliveries included) and garbage, in publishing order."""

    messages: list[Arrival | bytes] = field(default_factory=list)

    @property
    def arrivals(self) -> list[Arrival]:
        return [m for m in self.messages if isinstance(m, Arrival)]

    @property
    def garbage(self) -> int:
        return sum(1 for m in self.messages if isinstance(m, bytes))


def workload(rng: random.Random, events: int, models: int) -> Workload:
    """Arrivals for `models` models; about 1 in 10 repeats an earlier digest under a new id, 1 in 20 is a
    redelivery (same id, same body), 1 in 50 is garbage."""
    out = Workload()
    for n in range(events):
        roll = rng.random()
        earlier = out.arrivals
        if earlier and roll < 0.05:
            out.messages.append(rng.choice(earlier))
        elif earlier and roll < 0.15:
            old = rng.choice(earlier)
            out.messages.append(_arrival(old.model, old.digest, f"again-{n}"))
        elif roll < 0.17:
            out.messages.append(rng.choice(GARBAGE))
        else:
            out.messages.append(_arrival(f"m{rng.randrange(models)}", f"d{n}", f"e{n}"))
    return out


def _arrival(model: str, digest: str, event_id: str) -> Arrival:
    payload = DataArrived(model=model, uri=f"file:///data/{model}/{digest}", digest=digest)
    return Arrival(model, digest, event_id, to_bytes(new_event(payload, id=event_id)))


def chaos_settings(home: Path, bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics(data=f"chaos-data-{tag}", drift=f"chaos-drift-{tag}", deadletter=f"chaos-dead-{tag}",
                    runs=f"chaos-runs-{tag}", models=f"chaos-models-{tag}")
    return Settings(home=home, bus="kafka", kafka_bootstrap=bootstrap, topics=topics)


@dataclass(frozen=True)
class Report:
    events_sent: int
    distinct_events: int
    decided_events: int
    distinct_keys: int
    runs: int
    trained_keys: int
    duplicates: int
    lost: int
    interrupted_runs: int
    unfinished_runs: int
    garbage_sent: int
    dead_lettered: int  # every message in the dead-letter topic, not de-duplicated
    dead_letter_origins: int  # distinct bad messages among them
    kills: int  # SIGKILLs that hit a running sensor process
    broker_restarts: int
    seconds: float
    problems: tuple[str, ...]

    def table(self) -> str:
        return side_by_side({"value": self})


def side_by_side(reports: dict[str, Report]) -> str:
    """A markdown table, one column per report."""
    rows: list[tuple[str, Callable[[Report], object]]] = [
        ("events sent (incl. redeliveries, garbage)", lambda r: r.events_sent),
        ("distinct valid events", lambda r: r.distinct_events),
        ("events with a recorded decision", lambda r: r.decided_events),
        ("distinct (model, digest)", lambda r: r.distinct_keys),
        ("runs in the run store", lambda r: r.runs),
        ("(model, digest) trained", lambda r: r.trained_keys),
        ("duplicates (trained twice)", lambda r: r.duplicates),
        ("lost", lambda r: r.lost),
        ("runs interrupted by a kill (then retried)", lambda r: r.interrupted_runs),
        ("runs left unfinished", lambda r: r.unfinished_runs),
        ("garbage sent / dead letters (all) / distinct origins",
         lambda r: f"{r.garbage_sent} / {r.dead_lettered} / {r.dead_letter_origins}"),
        ("SIGKILLs survived", lambda r: r.kills),
        ("broker restarts", lambda r: r.broker_restarts),
        ("wall time", lambda r: f"{r.seconds:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["| " + " | ".join(["measure".ljust(width), *reports]) + " |",
             "|" + "|".join(["-" * (width + 2), *("-" * (len(n) + 2) for n in reports)]) + "|"]
    for name, value in rows:
        cells = [str(value(r)).ljust(len(n)) for n, r in reports.items()]
        lines.append("| " + " | ".join([name.ljust(width), *cells]) + " |")
    return "\n".join(lines)


class _Publisher:
    """Publishes chunks in the background, a little at a time, so events flow while the sensor runs."""

    def __init__(self, bootstrap: str, topic: str, pace_s: float) -> None:
        self.bus = KafkaBus(bootstrap, client_id="ctloop-chaos-publisher")
        self.topic = topic
        self.pace_s = pace_s
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def send(self, chunk: list[Arrival | bytes]) -> None:
        self.join()
        self._thread = threading.Thread(target=self._send, args=(chunk,), daemon=True)
        self._thread.start()

    def _send(self, chunk: list[Arrival | bytes]) -> None:
        try:
            for i, message in enumerate(chunk):
                if isinstance(message, Arrival):
                    self.bus.publish(self.topic, message.value, key=message.model)
                else:
                    self.bus.publish(self.topic, message)
                if i % 10 == 9:
                    self.bus.flush(timeout_s=60)
                    time.sleep(self.pace_s)
            self.bus.flush(timeout_s=60)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.join()
        self.bus.close()


def _env(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings` in force, and its code version, so that the sensor
    process computes the same idempotency keys as the audit."""
    env = {**os.environ, "CTLOOP_CODE_VERSION": code_version()}
    for name, value in settings_env(settings).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path, *, stop: signal.Signals = signal.SIGKILL
             ) -> Iterator[subprocess.Popen]:
    """A sensor process, its output in `log`; at the end sent `stop` if still running, and reaped."""
    proc = _spawn(command, env, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
        proc.wait(timeout=60)


def _log_tail(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _decided(db: Path) -> int:
    rows = _query(db, "SELECT COUNT(*) FROM sensor_events")
    return int(rows[0][0]) if rows else 0


def _decided_ids(db: Path) -> set[str]:
    """The events the sensor's log has a decision for."""
    return {e for (e,) in _query(db, "SELECT DISTINCT event_id FROM sensor_decisions")}


def _settled(db: Path, expected_events: int) -> bool:
    """Every event decided, nothing reserved, queued or running in the sensor, no run unfinished."""
    if _decided(db) < expected_events:
        return False
    states = [json.loads(s) for (s,) in _query(db, "SELECT state FROM sensor_state")]
    if any(s["running"] or s["queued"] or s["windows"] for s in states):
        return False
    return not _query(db, "SELECT 1 FROM wf_runs WHERE status IN ('Pending', 'Running') LIMIT 1")


def _wait_settled(db: Path, events: int, proc: subprocess.Popen, timeout_s: float,
                  what: str = "everything settled") -> None:
    _wait(lambda: _settled(db, events), proc, timeout_s, what)


def run_chaos(settings: Settings, work: Workload, *, kills: int, rng: random.Random, train_s: float = 0.2,
              restart_broker: Callable[[], None] | None = None, restart_after_kill: int | None = None,
              settle_timeout_s: float = 180.0, pace_s: float = 0.05) -> Report:
    """Publish `work` in `kills` chunks, each while a sensor process runs that is SIGKILLed at a random
    moment after it made progress; in round `restart_after_kill` the broker is restarted while the
    process runs. A last process runs until everything settled (with no kills, it gets all of `work`);
    then audit."""
    started = time.monotonic()
    command = [sys.executable, "-m", "tests.reliability.chaos_process", str(train_s)]
    env = _env(settings)
    db = settings.state_db
    size = -(-len(work.messages) // max(kills, 1))
    chunks = [work.messages[i:i + size] for i in range(0, len(work.messages), size)] if kills else []
    publisher = _Publisher(settings.kafka_bootstrap, settings.topics.data, pace_s)
    restarts = landed = 0
    try:
        for k, chunk in enumerate(chunks):
            restart_here = restart_broker is not None and k == restart_after_kill
            # The broker restarts under a consuming sensor: one that starts while it is down fails fast, by design.
            parts = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]] if restart_here else [chunk]
            with _process(command, env, settings.home / f"sensor-{k}.log") as proc:
                for i, part in enumerate(parts):
                    if i:
                        publisher.join()
                        restart_broker()  # type: ignore[misc]
                        restarts += 1
                    before = _decided(db)
                    publisher.send(part)
                    _wait(lambda b=before: _decided(db) > b, proc, 90,
                          f"progress in round {k}{' after the broker restart' if i else ''} (from {before} decided)")
                time.sleep(rng.uniform(0, 4 * train_s))
            # Counted from the outcome, not the plan: a process that had already exited was not killed.
            landed += proc.returncode == -signal.SIGKILL
        publisher.join()
        distinct = {a.event_id for a in work.arrivals}
        with _process(command, env, settings.home / "sensor-final.log", stop=signal.SIGTERM) as proc:
            if not kills:
                publisher.send(work.messages)
                publisher.join()
            _wait_settled(db, len(distinct), proc, settle_timeout_s)
        dead = _dead_letters(publisher.bus, settings)
    finally:
        publisher.close()
    return audit(settings, work, kills=landed, restarts=restarts, dead_lettered=dead,
                 seconds=time.monotonic() - started)


def run_through_broker_restart(settings: Settings, work: Workload, *, restart_broker: Callable[[], None],
                               train_s: float = 0.1, settle_timeout_s: float = 180.0) -> Report:
    """One sensor process, never restarted: half of `work` before the broker restarts, half after."""
    started = time.monotonic()
    command = [sys.executable, "-m", "tests.reliability.chaos_process", str(train_s)]
    db = settings.state_db
    half = len(work.messages) // 2
    first_ids = {m.event_id for m in work.messages[:half] if isinstance(m, Arrival)}
    publisher = _Publisher(settings.kafka_bootstrap, settings.topics.data, 0.0)
    try:
        with _process(command, _env(settings), settings.home / "sensor.log", stop=signal.SIGTERM) as proc:
            publisher.send(work.messages[:half])
            _wait(lambda: _decided(db) >= len(first_ids), proc, settle_timeout_s, "the first half decided")
            restart_broker()
            publisher.send(work.messages[half:])
            publisher.join()
            distinct = {a.event_id for a in work.arrivals}
            _wait_settled(db, len(distinct), proc, settle_timeout_s, "everything settled after the restart")
            dead = _dead_letters(publisher.bus, settings)
    finally:
        publisher.close()
    return audit(settings, work, kills=0, restarts=1, dead_lettered=dead, seconds=time.monotonic() - started)


def _wait(done: Callable[[], bool], proc: subprocess.Popen | None, timeout_s: float, what: str,
          poll_s: float = 0.1) -> None:
    """Until `done()`; `RuntimeError` after `timeout_s`, or at once when `proc` (if given) has exited."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the sensor process exited with {proc.returncode} before {what}:\n{_log_tail(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {timeout_s:.0f} s")
        time.sleep(poll_s)


def _dead_letters(bus: KafkaBus, settings: Settings) -> DeadLetterCount:
    """Every message in the dead-letter topic, none de-duplicated, by origin; and which origins were garbage."""
    per_origin = Counter(origin_of(m) for m in bus.read_all(settings.topics.deadletter))
    garbage = {(m.topic, m.partition, m.offset) for m in bus.read_all(settings.topics.data) if m.value in GARBAGE}
    return DeadLetterCount(per_origin, frozenset(garbage))


@dataclass(frozen=True)
class DeadLetterCount:
    per_origin: Counter  # (topic, partition, offset) of the bad message -> dead letters found for it
    garbage: frozenset[tuple[str, int, int]]  # where the garbage landed in the data topic

    @property
    def messages(self) -> int:
        return sum(self.per_origin.values())

    def problems(self) -> list[str]:
        out = []
        twice = {o: n for o, n in self.per_origin.items() if n > 1}
        if twice:
            out.append(f"dead-lettered more than once: {sorted(twice.items())[:3]}")
        missing = sorted(self.garbage - set(self.per_origin))
        if missing:
            out.append(f"{len(missing)} garbage messages never dead-lettered, e.g. {missing[:3]}")
        extra = sorted(set(self.per_origin) - self.garbage, key=str)
        if extra:
            out.append(f"{len(extra)} dead letters for messages that were not garbage, e.g. {extra[:3]}")
        return out


def audit(settings: Settings, work: Workload, *, kills: int, restarts: int, dead_lettered: DeadLetterCount,
          seconds: float) -> Report:
    db = settings.state_db
    version = code_version()
    arrivals = work.arrivals
    distinct_events = {a.event_id for a in arrivals}
    decided = _decided_ids(db)
    kinds: dict[str, set[str]] = {}
    for event_id, kind in _query(db, "SELECT event_id, kind FROM sensor_decisions"):
        kinds.setdefault(event_id, set()).add(kind)
    runs = _query(db, "SELECT r.id, r.idempotency_key, r.status, r.error FROM wf_runs r")
    trained = Counter(key for (key,) in _query(
        db, "SELECT r.idempotency_key FROM wf_runs r JOIN wf_steps s ON s.run_id = r.id"
            f" WHERE s.name = '{TRAIN_STEP}' AND s.status = 'Succeeded' AND s.cached = 0"))
    keys = {(a.model, a.digest): idempotency_key(a.model, a.digest, version) for a in arrivals}
    by_pair: dict[tuple[str, str], set[str]] = {}
    for a in arrivals:
        by_pair.setdefault((a.model, a.digest), set()).add(a.event_id)
    latest: dict[str, tuple[str, str]] = {}
    first_seen: set[str] = set()
    for a in arrivals:
        # A redelivery repeats an event already decided, so only first deliveries make a model's newest data.
        if a.event_id not in first_seen:
            first_seen.add(a.event_id)
            latest[a.model] = (a.model, a.digest)
    problems: list[str] = []
    undecided = sorted(distinct_events - decided)
    if undecided:
        problems.append(f"{len(undecided)} events without a decision, e.g. {undecided[:3]}")
    lost = len(undecided)
    for pair, key in keys.items():
        if trained[key]:
            continue
        explained = any(kinds.get(e, set()) & {"coalesced", "deduped"} for e in by_pair[pair])
        if not explained or pair in latest.values():
            lost += 1
            problems.append(f"{pair} never trained ({'newest for its model' if explained else 'no reason recorded'})")
    duplicates = sum(n - 1 for n in trained.values() if n > 1)
    if duplicates:
        problems.append(f"trained twice: {[k for k, n in trained.items() if n > 1][:3]}")
    unfinished = [r for r in runs if r[2] in ("Pending", "Running")]
    if unfinished:
        problems.append(f"{len(unfinished)} runs unfinished, e.g. {unfinished[:2]}")
    problems.extend(dead_lettered.problems())
    return Report(
        events_sent=len(work.messages), distinct_events=len(distinct_events),
        decided_events=len(decided & distinct_events), distinct_keys=len(keys), runs=len(runs),
        trained_keys=len(trained), duplicates=duplicates, lost=lost,
        interrupted_runs=sum(1 for r in runs if r[3] and r[3].startswith("interrupted")),
        unfinished_runs=len(unfinished), garbage_sent=work.garbage, dead_lettered=dead_lettered.messages,
        dead_letter_origins=len(dead_lettered.per_origin), kills=kills,
        broker_restarts=restarts, seconds=seconds, problems=tuple(problems),
    )

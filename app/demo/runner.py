"""The whole loop in one process, driven through each component's public API and the same bus topics.

Stages (each recorded in the journal when done, so `--resume` continues after the last one):

1. bootstrap: the first batch lands in the object store → `ctloop.data.arrived` → LocalSensor →
   retrain workflow on the LocalEngine → version 1 becomes champion;
2. burst: more batches land at once → admission control coalesces them into one run on the newest
   snapshot → the challenger is evaluated against the champion and promoted or rejected;
3. drift: serving answers real HTTP requests and logs prediction batches; the traffic drifts → the
   monitor publishes one drift event and sends one alert; the outcomes of served traffic arrive later as
   label events (see `labels`), which the outcomes runtime joins to the served predictions, scores as live
   quality per version and lands under the spec's `retrain_uri`, which the drift event names as its data →
   the sensor admits a rerun on that recent labelled traffic → a new version; the monitor then follows the
   new champion;
4. by hand: a manual promotion and a rollback through the `ctloop` commands a user would type;
5. bake: the rejected challenger is promoted by hand to try it on live traffic; serving shadows the champion
   it replaced (`--shadow previous`) on the same requests; their labels arrive and join; the bake window
   (`ctloop bake`) finds the new champion worse on them and rolls it back automatically, with an alert.

The components run in this process but share nothing except the bus, the registry, the object store
and the state database, as they would as separate processes.
"""

from __future__ import annotations

import io
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from ctloop.app.demo.journal import EventRecord, Journal, load_journal, save_journal
from ctloop.app.demo.labels import label_events
from ctloop.app.demo.narration import Narrator
from ctloop.app.demo.story import LABEL, Batch, Story, StoryConfig, TrafficWindow, build_story
from ctloop.app.demo.summary import Summary, collect
from ctloop.bus import Bus
from ctloop.failures import Failure
from ctloop.settings import Settings, Topics

if TYPE_CHECKING:
    from ctloop.monitors.monitor import WindowOutcome
    from ctloop.workflows.local.run_store import RunRecord

STAGES = ("bootstrap", "burst", "drift", "manual", "bake")
SENSOR_GROUP = "ctloop-sensor"
MONITOR_GROUP = "ctloop-monitor"
REQUEST_ROWS = 100
ACTOR = "demo-operator"


class DemoError(RuntimeError, Failure):
    """The story could not be played; the message says which step and why."""


class DemoOptions(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    home: Path
    kafka: str | None = None
    resume: bool = False
    tracking_uri: str | None = None
    story: StoryConfig = StoryConfig()
    coalesce_window_s: float = 1.0
    step_timeout_s: float = 300.0

    @property
    def bus(self) -> Literal["embedded", "kafka"]:
        return "kafka" if self.kafka else "embedded"


def prepare_home(home: Path, resume: bool) -> tuple[Journal | None, str]:
    """The journal to resume from (or None for a clean start), and a sentence saying which it is."""
    journal = load_journal(home)
    if resume and journal is not None:
        done = ", ".join(journal.done) or "none"
        return journal, f"resuming the demo in {home} (stages done: {done})"
    if home.exists() and any(home.iterdir()):
        if journal is None:
            raise DemoError(f"{home} is not empty and holds no demo.json, so it is not a demo home; "
                            "pass another --home or empty it")
        shutil.rmtree(home)
        return None, f"starting clean in {home} (previous demo state removed)"
    return None, f"starting clean in {home}" + (" (nothing to resume there)" if resume else "")


def demo_settings(options: DemoOptions, journal: Journal) -> Settings:
    """The embedded default under the demo's home, whatever CTLOOP_* or ctloop.toml say: a demo must not
    register its models in a registry or write to an object store it was not pointed at by its own flags."""
    suffix = journal.topic_suffix
    topics = Topics(**{name: value + suffix for name, value in Topics().model_dump().items()})
    return Settings(
        home=options.home.resolve(), topics=topics, engine="local",
        bus=options.bus, kafka_bootstrap=options.kafka or "127.0.0.1:9092",
        mlflow_tracking_uri=options.tracking_uri, s3_endpoint_url=None,
    )


def settings_env(settings: Settings) -> dict[str, str | None]:
    """The environment under which a `ctloop` command sees these settings, as a user's shell would;
    None unsets a variable the caller's environment may hold."""
    env: dict[str, str | None] = {
        "CTLOOP_HOME": str(settings.home), "CTLOOP_BUS": settings.bus,
        "CTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CTLOOP_ENGINE": settings.engine,
        "CTLOOP_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "CTLOOP_S3_ENDPOINT_URL": settings.s3_endpoint_url,
    }
    env |= {f"CTLOOP_TOPICS__{name.upper()}": value for name, value in settings.topics.model_dump().items()}
    return env


def run_demo(options: DemoOptions, narrator: Narrator) -> Summary:
    started = time.monotonic()
    story = build_story(options.story)
    home = options.home.resolve()
    journal, said = prepare_home(home, options.resume)
    narrator.say(said)
    if journal is None:
        suffix = f".demo-{secrets.token_hex(4)}" if options.kafka else ""
        journal = Journal(model=story.spec.name, bus=options.bus, topic_suffix=suffix)
    elif journal.bus != options.bus:
        raise DemoError(f"the demo in {home} ran on the {journal.bus} bus; resume it on the same bus or use --clean")
    settings = demo_settings(options, journal)
    save_journal(home, journal)
    error = None
    with Loop(settings, story, journal, narrator, options) as loop:
        for number, stage in enumerate(STAGES, start=1):
            if stage in journal.done:
                narrator.say(f"stage {number} ({stage}) already done; skipped")
                continue
            try:
                getattr(loop, stage)(number)
            except Failure as exc:
                # What happened so far is still on record; the summary shows it, and the failure.
                error = f"stage {number} ({stage}) failed: {exc}"
                break
            journal.done.append(stage)
            save_journal(home, journal)
    summary = collect(settings, journal, said)
    return summary.model_copy(update={"wall_s": round(time.monotonic() - started, 2), "error": error})


class Loop:
    """The long-lived parts (bus, engine, sensor) and the stages that drive them."""

    def __init__(self, settings: Settings, story: Story, journal: Journal, narrator: Narrator,
                 options: DemoOptions) -> None:
        self.settings = settings
        self.story = story
        self.journal = journal
        self.narrator = narrator
        self.options = options
        self.model = story.spec.name
        self._stack = ExitStack()

    def __enter__(self) -> Loop:
        from ctloop.bus_factory import open_bus
        from ctloop.modelspec import save_spec
        from ctloop.monitors.outcomes_service import outcomes_service
        from ctloop.objectstore import LocalStore
        from ctloop.sensors.admission import AdmissionPolicy
        from ctloop.sensors.local.assembly import local_sensor
        from ctloop.workflows.local.engine import LocalEngine

        self.store = LocalStore(self.settings.store_root)
        # Where the outcomes runtime lands recent labelled traffic; the monitor reads it from the spec.
        retrain_uri = self.store.uri(f"recent/{self.model}") + "/"
        save_spec(self.story.spec.model_copy(update={"retrain_uri": retrain_uri}), self.settings)
        self.bus: Bus = open_bus(self.settings)
        self._stack.callback(self.bus.close)
        # Only the newest window lands, so a drift-triggered run trains on the traffic that drifted rather
        # than on the concept before it; evaluation is driven by the stages, not by a timer.
        self.outcomes = outcomes_service(self.settings, self.bus, land_rows=self.story.config.traffic_rows,
                                         evaluate_every_s=float("inf"))
        self._stack.callback(self.outcomes.close)
        self.engine = LocalEngine(self.settings)
        policy = AdmissionPolicy(window_s=self.options.coalesce_window_s, drift_cooldown_s=3600.0)
        self.sensor = local_sensor(self.settings, self.bus, self.engine, group=SENSOR_GROUP, policy=policy)
        self._stack.callback(self.sensor.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # --- stages ------------------------------------------------------------------------------------

    def bootstrap(self, number: int) -> None:
        self.narrator.stage(number, "Bootstrap: the first batch arrives")
        event = self._land(self.story.bootstrap, "bootstrap")
        run = self._await_run([event.id], "the bootstrap retrain")
        self._tell_run(run)

    def burst(self, number: int) -> None:
        self.narrator.stage(number, f"A burst of {len(self.story.burst)} batches: admission control coalesces")
        events = [self._land(batch, "burst") for batch in self.story.burst]
        run = self._await_run([e.id for e in events], "the coalesced retrain")
        self._tell_decisions([e.id for e in events])
        self._tell_run(run)

    def drift(self, number: int) -> None:
        self.narrator.stage(number, "Serving, drift, alert and a drift-triggered retrain")
        with (Serving(self.settings, self.model) as serving,
              Monitoring(self.settings, self.story, self.journal, self._persist) as mon):
            self.narrator.say(f"serving models:/{self.model}@champion on {serving.url} (version {serving.version})")
            self.narrator.say(f"drift alerts go to the webhook {mon.alerts_url}")
            for window in self.story.traffic_before:
                self._send(serving, mon, window)
            first = self.story.traffic_after[0]
            self.narrator.say("[bold]the customer base changes[/bold]: traffic drifts from here on")
            self._send(serving, mon, first)
            drift_ids = [e.id for e in self.journal.events if e.type == "ctloop.drift.detected"]
            if not drift_ids:
                raise DemoError(f"the monitor saw no drift in {first.name}; the story expects one")
            run = self._await_run(drift_ids, "the drift-triggered retrain")
            self._tell_decisions(drift_ids)
            self._tell_run(run)
            champion = self._champion()
            with self.narrator.waiting(f"serving switches to version {champion}"):
                serving.await_version(champion, self.options.step_timeout_s)
            self.narrator.say(f"serving now answers with version {serving.version}")
            mon.follow_champion()
            self.narrator.say(f"the monitor now compares against version {mon.reference_version}'s training data")
            for window in self.story.traffic_after[1:]:
                self._send(serving, mon, window)
            # Drift events of later windows, if any, reach the sensor and are recorded (cooldown).
            self._drain_sensor()

    def manual(self, number: int) -> None:
        from ctloop.deploy.promotion import promote, rollback
        from ctloop.deploy.registry import Registry

        self.narrator.stage(number, "By hand: a manual promotion and a rollback")
        versions = Registry(self.settings.tracking_uri).versions(self.model)
        rejected = [v.version for v in versions if v.decision == "reject"]
        champion = self._champion()
        if not rejected:
            raise DemoError("no rejected challenger to promote by hand; the burst retrain was promoted")
        target = rejected[-1]
        reason = "reviewed by hand: accept the larger training set despite the policy"
        self._as_typed("promote", self.model, target, "--actor", ACTOR, "--reason", reason)
        result = promote(self.settings.tracking_uri, self.model, target, actor=ACTOR, reason=reason, manual=True,
                         bus=self.bus, models_topic=self.settings.topics.models)
        self.narrator.say(f"  {self.model}: champion {result.previous or '-'} -> {result.version} (by {ACTOR})")
        reason = f"undo the manual promotion of v{target}: v{champion} was trained on recent traffic"
        self._as_typed("rollback", self.model, "--actor", ACTOR, "--reason", reason)
        result = rollback(self.settings.tracking_uri, self.model, actor=ACTOR, reason=reason, bus=self.bus,
                          models_topic=self.settings.topics.models)
        self.narrator.say(f"  {self.model}: rolled back champion {result.previous} -> {result.version} (by {ACTOR})")

    def bake(self, number: int) -> None:
        from datetime import UTC, datetime

        from ctloop.app.demo.webhook import WebhookReceiver
        from ctloop.deploy.bake import RegistryBakes
        from ctloop.deploy.promotion import promote
        from ctloop.deploy.registry import Registry
        from ctloop.monitors.alerts import WebhookNotifier
        from ctloop.monitors.bake import bake_once

        self.narrator.stage(number, "Bake window: a worse champion is rolled back automatically")
        rejected = [v.version for v in Registry(self.settings.tracking_uri).versions(self.model)
                    if v.decision == "reject"]
        if not rejected:
            raise DemoError("no rejected challenger to try on live traffic")
        target, champion, timeout = rejected[-1], self._champion(), self.options.step_timeout_s
        with Serving(self.settings, self.model, shadow="previous") as serving, WebhookReceiver() as receiver:
            reason = f"try v{target} on live traffic; its bake window judges it against v{champion}"
            self._as_typed("promote", self.model, target, "--actor", ACTOR, "--reason", reason)
            promote(self.settings.tracking_uri, self.model, target, actor=ACTOR, reason=reason, manual=True,
                    bus=self.bus, models_topic=self.settings.topics.models)
            with self.narrator.waiting(f"serving answers with v{target} and shadows v{champion}"):
                serving.await_version(target, timeout)
                serving.await_shadow(champion, timeout)
            self.narrator.say(f"serving (`ctloop serve --shadow previous`) answers with v{target}; v{champion}, now "
                              "`previous`, scores the same requests in shadow, logged under the same ids")
            window = self.story.traffic_after[-1]
            rows = window.features.to_dict(orient="records")
            ids: list[str] = []
            for start in range(0, len(rows), REQUEST_ROWS):
                ids += serving.predict(rows[start:start + REQUEST_ROWS])[1]
            serving.await_shadowed(-(-len(rows) // REQUEST_ROWS), timeout)
            store = self.outcomes.store
            wanted = store.joined_count() + 2 * len(ids)  # the champion's row and the shadow's of each id
            for event in label_events(ids, window.frame[LABEL].tolist(), datetime.now(UTC), seed=number):
                self.bus.publish(self.settings.topics.labels, event)
            self.bus.flush()
            deadline = time.monotonic() + timeout
            with self.narrator.waiting(f"the joiner matches {len(ids)} labels to both versions' predictions"):
                while store.joined_count() < wanted:
                    if time.monotonic() > deadline:
                        raise DemoError(f"{store.joined_count()} of {wanted} rows joined within {timeout:.0f}s")
                    self.outcomes.step(0.2)
            self._as_typed("bake", "--once")
            bakes = RegistryBakes(self.settings.tracking_uri, bus=self.bus, models_topic=self.settings.topics.models)
            verdict = bake_once(self.story.spec, store, bakes, notifier=WebhookNotifier(receiver.url))
            if verdict is None or verdict.outcome != "rollback":
                raise DemoError(f"the bake window did not roll v{target} back: "
                                f"{verdict.reason if verdict else 'no bake open'}")
            self.narrator.say(f"[red]rolled back[/red] automatically: {verdict.reason}")
            with self.narrator.waiting(f"serving switches back to v{champion}"):
                serving.await_version(champion, timeout)
            self.narrator.say(f"serving answers with v{champion} again; the audit trail holds the evidence")
            self.journal.bake_alerts = receiver.received
            for alert in self.journal.bake_alerts:
                self.narrator.say(f"webhook received an alert: {alert['body'].get('text', alert['body'])}")
            self._persist()

    # --- steps -------------------------------------------------------------------------------------

    def _land(self, batch: Batch, stage: str) -> EventRecord:
        """Write a batch under the model's data prefix and announce the prefix, pinned by its digest."""
        from ctloop.events import DataArrived, new_event, to_bytes
        from ctloop.snapshot import take_snapshot

        buf = io.BytesIO()
        batch.frame.to_parquet(buf, index=False)
        self.store.put(f"data/{self.model}/{batch.name}.parquet", buf.getvalue())
        prefix = self.store.uri(f"data/{self.model}") + "/"
        snapshot = take_snapshot(prefix)
        event = new_event(DataArrived(model=self.model, uri=prefix, digest=snapshot.digest,
                                      size=sum(o.size for o in snapshot.objects)), source="urn:ctloop:demo")
        self.bus.publish(self.settings.topics.data, to_bytes(event), key=self.model)
        self.bus.flush()
        noisy = ", labels garbled" if batch.noisy_labels else ""
        detail = f"{batch.name}: {len(batch.frame)} rows{noisy}; data now {len(snapshot.objects)} files"
        record = EventRecord(id=event.id, type=event.type, topic=self.settings.topics.data, stage=stage, detail=detail)
        self.journal.events.append(record)
        self._persist()
        self.narrator.say(f"{batch.name} landed ({len(batch.frame)} rows{noisy}) → data.arrived {event.id[:8]}")
        return record

    def _await_run(self, event_ids: list[str], what: str) -> RunRecord:
        """Step the sensor until it triggered a run for one of these events, wait for the run to end, then
        step the sensor until it saw the end, so the model's slot is free for the next trigger."""
        from ctloop.workflows.engine import FINAL_STATUSES

        deadline = time.monotonic() + self.options.step_timeout_s

        def check(waiting_for: str) -> None:
            if time.monotonic() > deadline:
                raise DemoError(f"{what}: {waiting_for} after {self.options.step_timeout_s:.0f}s (events "
                                f"{', '.join(e[:8] for e in event_ids)}); see `ctloop events list`")

        with self.narrator.waiting(f"sensor → {what}"):
            run_id = None
            while run_id is None:
                self.sensor.step(0.2)
                run_id = self._triggered(event_ids)
                check("no run triggered")
            # The run trains in the engine's thread; polling its status only leaves it the CPU.
            while self.engine.status(run_id) not in FINAL_STATUSES:
                time.sleep(0.2)
                check(f"run {run_id} not finished")
            while self.model in self.sensor.state.running:
                self.sensor.step(0.1)
                check(f"the sensor did not see run {run_id} end")
        return self.engine.run(run_id)

    def _triggered(self, event_ids: list[str]) -> str | None:
        from ctloop.sensors.local.decisions import list_decisions

        for d in list_decisions(self.settings.state_db, model=self.model, limit=100):
            if d.kind == "triggered" and d.run_id and d.event_id in event_ids:
                return d.run_id
        return None

    def _persist(self) -> None:
        """Write the journal at once, so an interrupted stage still lists the events it published."""
        save_journal(self.settings.home, self.journal)

    def _drain_sensor(self) -> None:
        for _ in range(3):
            self.sensor.step(0.2)

    def _send(self, serving: Serving, mon: Monitoring, window: TrafficWindow) -> None:
        rows = window.features.to_dict(orient="records")
        alerts_before = len(self.journal.alerts)
        versions, ids = set(), []
        for start in range(0, len(rows), REQUEST_ROWS):
            version, served_ids = serving.predict(rows[start:start + REQUEST_ROWS])
            versions.add(version)
            ids += served_ids
        with self.narrator.waiting(f"monitor reads the prediction log of {window.name}"):
            outcome = mon.await_window(self.options.step_timeout_s)
        served = ", ".join(f"v{v}" for v in sorted(versions))
        verdict = outcome.verdict
        state = "[red]DRIFT[/red]" if outcome.drifted else "no drift"
        columns = ", ".join(verdict.drifted_columns) or "none"
        self.narrator.say(f"{window.name}: {len(rows)} rows served by {served} → monitor: {state} "
                          f"(drifted share {verdict.drifted_share:.2f}; columns: {columns})")
        if outcome.event is not None:
            data = outcome.event.data
            self.narrator.say(f"drift event {outcome.event.id[:8]} published to {self.settings.topics.drift}; "
                              f"its evidence, the window's served rows: {data.rows_uri}; its data to retrain on, "
                              f"the spec's retrain_uri: {data.data_uri}")
        self._outcomes(window, ids)
        for alert in self.journal.alerts[alerts_before:]:
            self.narrator.say(f"webhook received an alert: {alert['body'].get('text', alert['body'])}")

    def _outcomes(self, window: TrafficWindow, ids: list[str]) -> None:
        """The window's outcomes become known: label events out of order, joined, scored and landed."""
        from datetime import UTC, datetime

        if window is self.story.traffic[0]:
            self.narrator.say("outcomes become known later: each served prediction's label arrives as a "
                              f"ctloop.label.observed event on {self.settings.topics.labels}, naming the id "
                              "serving returned; `ctloop outcomes run` joins them")
        events = label_events(ids, window.frame[LABEL].tolist(), datetime.now(UTC), seed=len(self.journal.events))
        for event in events:
            self.bus.publish(self.settings.topics.labels, event)
        self.bus.flush()
        store, wanted = self.outcomes.store, self.outcomes.store.joined_count() + len(ids)
        deadline = time.monotonic() + self.options.step_timeout_s
        with self.narrator.waiting(f"the joiner matches {len(ids)} labels of {window.name}"):
            while store.joined_count() < wanted:
                if time.monotonic() > deadline:
                    raise DemoError(f"{store.joined_count()} of {wanted} labels joined within "
                                    f"{self.options.step_timeout_s:.0f}s; see `ctloop outcomes status`")
                self.outcomes.step(0.2)
        result = self.outcomes.evaluate()
        if result is None:
            raise DemoError(f"the labels of {window.name} joined but the outcomes runtime evaluated nothing")
        quality = ", ".join(f"v{q.version} accuracy {q.live.metrics['accuracy']:.3f} on {q.live.n} rows"
                            for q in result.quality if "accuracy" in q.live.metrics)
        self.narrator.say(f"labels: {len(ids)} joined out of order → live quality {quality}")
        for landed in result.landed:
            self.narrator.say(f"landed {landed.rows} labelled rows of the newest traffic → {landed.uri}")

    def _tell_decisions(self, event_ids: list[str]) -> None:
        from ctloop.sensors.local.decisions import list_decisions

        for eid in event_ids:
            for d in reversed(list_decisions(self.settings.state_db, event_id=eid)):
                self.narrator.say(f"sensor: event {eid[:8]} {d.kind} — {d.reason}")

    def _tell_run(self, run: RunRecord) -> None:
        from ctloop.deploy.registry import Registry

        if run.status != "Succeeded":
            raise DemoError(f"run {run.id} ended {run.status}: {run.error or 'see `ctloop runs show`'}")
        # Exactly one of promote and register ran (their `when`s are complementary); it names the version.
        made = [s.outputs["version"] for s in run.steps
                if s.name in ("promote", "register") and s.status == "Succeeded" and s.outputs.get("version")]
        version = made[0] if made else None
        if version is None:
            raise DemoError(f"run {run.id} succeeded but registered no version")
        info = Registry(self.settings.tracking_uri).version(self.model, version)
        accuracy = info.metrics.get("accuracy")
        verdict = "[green]promoted[/green]" if info.decision == "promote" else "[yellow]rejected[/yellow]"
        self.narrator.say(f"run {run.id} ({run.trigger}) → version {version}, accuracy "
                          f"{accuracy:.3f} → {verdict}" if accuracy is not None else f"run {run.id} → v{version}")
        for reason in info.reasons:
            self.narrator.say(f"    {reason}")

    def _champion(self) -> str:
        from ctloop.deploy.registry import CHAMPION, Registry

        champion = Registry(self.settings.tracking_uri).alias(self.model, CHAMPION)
        if champion is None:
            raise DemoError(f"{self.model} has no champion")
        return champion

    def _as_typed(self, *args: str) -> None:
        """Say which `ctloop` command a user would type for the step that follows (it calls the same function)."""
        self.narrator.say("$ ctloop " + " ".join(a if " " not in a else repr(a) for a in args))


class Serving:
    """`ctloop serve`'s parts, in this process, on a free port: follower, prediction log, event watcher."""

    def __init__(self, settings: Settings, model: str, *, shadow: str | None = None) -> None:
        self.settings = settings
        self.model = model
        self.shadow = shadow
        self._stack = ExitStack()

    def __enter__(self) -> Serving:
        from ctloop.bus_factory import open_bus
        from ctloop.deploy.serving import serving

        bus = open_bus(self.settings)
        self._stack.callback(bus.close)
        self.server = self._stack.enter_context(serving(
            self.settings.tracking_uri, self.model, poll_s=1.0, bus=bus,
            predictions_topic=self.settings.topics.predictions, models_topic=self.settings.topics.models,
            shadow=self.shadow,
        ))
        self.server.start()
        self._stack.callback(self.server.stop)
        self.follower = self.server.follower
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def version(self) -> str | None:
        current = self.follower.current
        return current.version if current else None

    def predict(self, rows: list[dict]) -> tuple[str, list[str]]:
        """POST rows to /predict over HTTP; the version that answered and the prediction ids it returned."""
        import httpx

        response = httpx.post(f"{self.url}/predict", json={"rows": rows}, timeout=60)
        if response.status_code != 200:
            raise DemoError(f"serving answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        return str(body["version"]), list(body["ids"])

    def await_version(self, version: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.version != version:
            if time.monotonic() > deadline:
                raise DemoError(f"serving still on version {self.version} {timeout_s:.0f}s after {version} "
                                "became champion")
            time.sleep(0.1)

    def await_shadow(self, version: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        shadow = self.server.app.shadow
        while shadow is None or getattr(shadow.follower.current, "version", None) != version:
            if time.monotonic() > deadline:
                raise DemoError(f"serving does not shadow version {version} after {timeout_s:.0f}s")
            time.sleep(0.1)

    def await_shadowed(self, requests: int, timeout_s: float) -> None:
        """Until the shadow has logged `requests` requests."""
        deadline = time.monotonic() + timeout_s
        shadow = self.server.app.shadow
        while shadow is not None and shadow.counts["logged"] < requests:
            if time.monotonic() > deadline:
                raise DemoError(f"the shadow logged {shadow.counts} of {requests} requests in {timeout_s:.0f}s")
            time.sleep(0.1)


class Monitoring:
    """The embedded drift monitor over the prediction topic, alerting a webhook on 127.0.0.1."""

    def __init__(self, settings: Settings, story: Story, journal: Journal, persist: Callable[[], None]) -> None:
        self.settings = settings
        self.story = story
        self.journal = journal
        self._persist = persist
        self._stack = ExitStack()
        self._outcomes: list[WindowOutcome] = []
        self.service = None

    def __enter__(self) -> Monitoring:
        from ctloop.app.demo.webhook import WebhookReceiver
        from ctloop.bus_factory import open_bus

        self.receiver = self._stack.enter_context(WebhookReceiver())
        self.bus = open_bus(self.settings)
        self._stack.callback(self.bus.close)
        self._stack.callback(self._close_service)
        self.follow_champion()
        return self

    def __exit__(self, *exc: object) -> None:
        self.journal.alerts = self.receiver.received
        self._stack.close()

    @property
    def alerts_url(self) -> str:
        return self.receiver.url

    def follow_champion(self) -> None:
        """(Re)start the monitor on the current champion's reference profile; its consumer group keeps
        its place in the prediction topic."""
        from ctloop.monitors.alerts import AlertPolicy, WebhookNotifier
        from ctloop.monitors.assembly import monitor_service
        from ctloop.monitors.monitor import MonitorConfig
        from ctloop.monitors.window import WindowPolicy

        self._close_service()
        config = MonitorConfig(window=WindowPolicy(max_rows=self.story.config.traffic_rows),
                               alerts=AlertPolicy(clean_windows=2, cooldown_s=3600.0))
        service = monitor_service(self.settings, self.bus, self.story.spec.name, config,
                                  notifier=WebhookNotifier(self.receiver.url), group=MONITOR_GROUP)
        self.reference_version = service.monitor.reference.version
        service.on_outcome = self._record
        self.service = service

    def _record(self, outcome: WindowOutcome) -> None:
        self._outcomes.append(outcome)
        if outcome.report_uri:
            self.journal.reports.append(outcome.report_uri)
        if outcome.event is not None:
            data = outcome.event.data
            if data.data_uri:
                self.journal.labelled.append(data.data_uri)
            self.journal.events.append(EventRecord(
                id=outcome.event.id, type=outcome.event.type, topic=self.settings.topics.drift, stage="drift",
                detail=f"{outcome.verdict.rows} served rows of v{data.version}, drifted share "
                       f"{data.drifted_share:.2f} ({', '.join(outcome.verdict.drifted_columns)})",
            ))
        self.journal.alerts = self.receiver.received
        self._persist()

    def await_window(self, timeout_s: float) -> WindowOutcome:
        """Step the monitor until the next window closes; its outcome."""
        assert self.service is not None
        seen = len(self._outcomes)
        deadline = time.monotonic() + timeout_s
        while len(self._outcomes) == seen:
            self.service.step(0.2)
            if time.monotonic() > deadline:
                raise DemoError(f"the monitor closed no window within {timeout_s:.0f}s; is serving logging "
                                f"predictions to {self.settings.topics.predictions}?")
        return self._outcomes[seen]

    def _close_service(self) -> None:
        if self.service is not None:
            self.service.close()
            self.service = None



"""The demo's closing summary, computed from the record the components keep, never from the demo's hopes.

Sources: the MLflow registry (versions, tags, aliases, audit trail), the workflow run store, and the
sensors' decision log; the demo's journal only adds what it published (event types and details),
the alerts its webhook received and the report paths. `checks` are the story's promises; the
command fails when any is not kept.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ctloop.app.demo.journal import Journal
from ctloop.settings import Settings


class EventRow(BaseModel):
    id: str
    type: str
    stage: str
    detail: str
    decisions: list[str]
    outcome: str
    run_id: str | None


class RunRow(BaseModel):
    id: str
    trigger: str | None
    trigger_event_id: str | None
    status: str
    version: str | None
    mlflow_run_id: str | None
    error: str | None
    seconds: float | None


class VersionRow(BaseModel):
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    decision: str | None
    reasons: list[str]
    provenance: dict[str, str | None]
    trigger: str | None
    caused_by: str | None
    """The event the version traces back to through its provenance tag and the sensor's record."""


class AuditRow(BaseModel):
    ts: str
    action: str
    version: str | None
    actor: str
    manual: bool
    reason: str


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Summary(BaseModel):
    start: str
    """Whether this run of the demo started clean or resumed, in words."""
    model: str
    home: str
    bus: str
    tracking_uri: str
    champion: str | None
    events: list[EventRow]
    runs: list[RunRow]
    versions: list[VersionRow]
    audit: list[AuditRow]
    alerts: int
    reports: list[str]
    checks: list[Check]
    next_steps: list[str]
    wall_s: float | None = None
    error: str | None = None
    """Why the story stopped early, if it did."""

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)


def collect(settings: Settings, journal: Journal, start: str) -> Summary:
    from ctloop.deploy.registry import CHAMPION, NotFound, Registry
    from ctloop.sensors.local.decisions import list_decisions
    from ctloop.workflows.local.run_store import RunStore

    model = journal.model
    registry = Registry(settings.tracking_uri)
    try:
        info = registry.model(model)
        versions = registry.versions(model)
    except NotFound:
        info, versions = None, []
    store = RunStore(settings.state_db)
    try:
        # `list` leaves the steps out; the version a run made is a step output.
        records = [store.get(r.id) for r in reversed(store.list(limit=1000, model=model))]
    finally:
        store.close()
    decisions = list(reversed(list_decisions(settings.state_db, model=model, limit=10_000)))

    runs = [RunRow(id=r.id, trigger=r.trigger, trigger_event_id=r.trigger_event_id, status=r.status,
                   version=_run_output(r, ("promote", "register"), "version"),
                   mlflow_run_id=_run_output(r, ("train",), "run-id"), error=r.error,
                   seconds=round(r.finished_at - r.created_at, 2) if r.finished_at else None) for r in records]
    triggered = {d.event_id: d.run_id for d in decisions if d.kind == "triggered" and d.run_id}
    run_by_id = {r.id: r for r in runs}

    events = []
    for record in journal.events:
        mine = [d for d in decisions if d.event_id == record.id]
        run_id = triggered.get(record.id)
        events.append(EventRow(
            id=record.id, type=record.type, stage=record.stage, detail=record.detail,
            decisions=[f"{d.kind}: {d.reason}" for d in mine], run_id=run_id,
            outcome=_outcome(mine, run_by_id.get(run_id) if run_id else None),
        ))

    roles: dict[str, list[str]] = {}
    for alias, number in (info.aliases if info else {}).items():
        roles.setdefault(number, []).append(alias)
    version_rows = []
    for v in versions:
        provenance = v.provenance
        event_id = provenance["event_id"]
        run = run_by_id.get(triggered.get(event_id or "", "") or "")
        caused = run is not None and run.mlflow_run_id == v.run_id and run.version == v.version
        version_rows.append(VersionRow(
            version=v.version, aliases=sorted(roles.get(v.version, [])), metrics=v.metrics, decision=v.decision,
            reasons=v.reasons, provenance=provenance, trigger=run.trigger if caused and run else None,
            caused_by=event_id if caused else None,
        ))

    audit = [AuditRow(ts=str(a.get("ts", "")), action=str(a.get("action", "")),
                      version=str(a["version"]) if a.get("version") is not None else None,
                      actor=str(a.get("actor", "")), manual=bool(a.get("manual")),
                      reason=str(a.get("reason") or "; ".join(a.get("reasons", []))))
             for a in (info.audit if info else [])]
    champion = info.aliases.get(CHAMPION) if info else None
    drift_events = [e for e in journal.events if e.type == "ctloop.drift.detected"]
    return Summary(
        start=start, model=model, home=str(settings.home.resolve()), bus=settings.bus,
        tracking_uri=settings.tracking_uri,
        champion=champion, events=events, runs=runs, versions=version_rows, audit=audit,
        alerts=len(journal.alerts), reports=[_path(u) for u in journal.reports],
        checks=story_checks(version_rows, runs, audit, len(drift_events), len(journal.alerts), events),
        next_steps=next_steps(settings, model, journal),
    )


def _run_output(run, steps: tuple[str, ...], name: str) -> str | None:
    for step in steps:
        record = run.step(step)
        if record is not None and record.status == "Succeeded" and record.outputs.get(name):
            return record.outputs[name]
    return None


def _outcome(decisions, run: RunRow | None) -> str:
    if run is not None:
        made = f"v{run.version}" if run.version else (run.error or "no version")
        return f"run {run.id.rsplit('-', 1)[-1]} {run.status} → {made}"
    if not decisions:
        return "no sensor decision recorded"
    last = decisions[-1]
    return f"no run: {last.kind} ({last.reason})"


def story_checks(versions: list[VersionRow], runs: list[RunRow], audit: list[AuditRow], drift_events: int,
                 alerts: int, events: list[EventRow]) -> list[Check]:
    burst = [e for e in events if e.stage == "burst"]
    burst_runs = [e for e in burst if e.run_id]
    coalesced = [e for e in burst if any(d.startswith("coalesced") for d in e.decisions)]
    rejected = [v.version for v in versions if v.decision == "reject"]
    drift_runs = [r for r in runs if r.trigger == "drift" and r.status == "Succeeded" and r.version]
    manual = [a for a in audit if a.action == "promote" and a.manual]
    rollbacks = [a for a in audit if a.action == "rollback"]
    automatic = [a for a in rollbacks if not a.manual]
    orphans = [v.version for v in versions if v.caused_by is None]
    return [
        Check(name="at least three versions", ok=len(versions) >= 3, detail=f"{len(versions)} registered"),
        Check(name="the burst coalesced into one run", ok=len(burst) > 1 and len(burst_runs) == 1
              and len(coalesced) == len(burst) - 1,
              detail=f"{len(burst)} arrivals, {len(coalesced)} coalesced, {len(burst_runs)} run(s)"),
        Check(name="a rejected challenger", ok=bool(rejected),
              detail=f"rejected: {', '.join('v' + v for v in rejected) or 'none'}"),
        Check(name="a drift-triggered run made a version", ok=bool(drift_runs),
              detail=", ".join(f"{r.id} -> v{r.version}" for r in drift_runs) or "none"),
        Check(name="one drift event and one alert", ok=drift_events == 1 and alerts == 1,
              detail=f"{drift_events} drift events, {alerts} alerts"),
        Check(name="a manual promotion", ok=bool(manual),
              detail=", ".join(f"v{a.version} by {a.actor}" for a in manual) or "none"),
        Check(name="a rollback", ok=bool(rollbacks), detail=", ".join(f"to v{a.version}" for a in rollbacks) or "none"),
        Check(name="an automatic rollback by the bake window", ok=bool(automatic),
              detail=", ".join(f"to v{a.version} by {a.actor}" for a in automatic) or "none"),
        Check(name="every version traces to the event that caused it", ok=bool(versions) and not orphans,
              detail="all traced" if versions and not orphans else f"untraced: {orphans or 'no versions'}"),
    ]


def next_steps(settings: Settings, model: str, journal: Journal) -> list[str]:
    home = settings.home.resolve()
    env = f"CTLOOP_HOME={home}" + (f" CTLOOP_MLFLOW_TRACKING_URI={settings.tracking_uri}"
                                    if settings.mlflow_tracking_uri else "")
    if settings.bus == "kafka":
        env += f" CTLOOP_BUS=kafka CTLOOP_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}"
    tracking = settings.tracking_uri
    ui = (f"mlflow ui --backend-store-uri {tracking} --default-artifact-root {settings.artifact_root}"
          if tracking.startswith("sqlite:") else f"open {tracking} (the MLflow UI of that server)")
    steps = [ui, f"{env} ctloop runs list --model {model}", f"{env} ctloop events list --model {model}",
             f"{env} ctloop models show {model}"]
    steps += [f"Evidently drift report: {_path(u)}" for u in journal.reports]
    steps += [f"drift run's data (labelled recent traffic, the spec's retrain_uri): {_path(u)}"
              for u in journal.labelled]
    return steps


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def render(summary: Summary, console: Console) -> None:
    console.print(summary.start.capitalize())
    events = Table(title="Events and what they caused", title_justify="left")
    for heading in ("event", "type", "stage", "what", "sensor", "outcome"):
        events.add_column(heading, overflow="fold")
    for e in summary.events:
        events.add_row(e.id[:8], e.type.removeprefix("ctloop."), e.stage, e.detail,
                       "\n".join(d.split(":")[0] for d in e.decisions) or "-", e.outcome)
    console.print(events)

    versions = Table(title=f"Versions of {summary.model}", title_justify="left")
    for heading in ("version", "aliases", "accuracy", "f1", "decision", "reasons", "caused by"):
        versions.add_column(heading, overflow="fold")
    for v in summary.versions:
        versions.add_row(f"v{v.version}", ",".join(v.aliases) or "-", _metric(v.metrics, "accuracy"),
                         _metric(v.metrics, "f1"), v.decision or "-", "\n".join(v.reasons),
                         f"{v.trigger or '?'} event {v.caused_by[:8]}" if v.caused_by else "[red]untraced[/red]")
    console.print(versions)

    if summary.audit:
        audit = Table(title="Audit trail", title_justify="left")
        for heading in ("when", "action", "version", "by", "manual", "why"):
            audit.add_column(heading, overflow="fold")
        for a in summary.audit:
            audit.add_row(a.ts[:19], a.action, f"v{a.version}" if a.version else "-", a.actor,
                          "yes" if a.manual else "no", a.reason)
        console.print(audit)

    console.print(f"Champion: [bold]v{summary.champion}[/bold]" if summary.champion else "Champion: none")
    if summary.error:
        console.print(f"[red]The story stopped early[/red]: {summary.error}")
    for check in summary.checks:
        mark = "[green]PASS[/green]" if check.ok else "[red]FAIL[/red]"
        console.print(f"  {mark} {check.name}: {check.detail}")
    console.print("Where to look next:")
    for step in summary.next_steps:
        console.print(f"  {step}", soft_wrap=True)


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.3f}" if name in metrics else "-"

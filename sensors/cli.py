"""`ctloop sensor run|render|webhook|poll-s3`, `ctloop render`, `ctloop emit data-arrived`, `ctloop events list`."""

from __future__ import annotations

import gc
import json
import signal
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ctloop.failures import Refused, Unreachable

if TYPE_CHECKING:
    from ctloop.settings import Settings

sensor_app = typer.Typer(help="Sensors: data and drift events become admitted retrain runs.", no_args_is_help=True)
emit_app = typer.Typer(help="Publish ctloop events by hand.", no_args_is_help=True)
events_app = typer.Typer(help="What the sensors decided about each event.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from ctloop.deploy.cli import model_sections
    from ctloop.sensors.gateway.cli import gateway_app

    app.add_typer(sensor_app, name="sensor")
    app.add_typer(gateway_app, name="gateway")
    app.add_typer(emit_app, name="emit")
    app.add_typer(events_app, name="events")
    app.command("render")(render)
    if _schedule_section not in model_sections:
        model_sections.append(_schedule_section)


def _schedule_section(name: str) -> tuple[str, object, list[str]] | None:
    """`ctloop models show`'s schedule part: the schedule, its next tick and what the last ticks decided."""
    from ctloop.modelspec import SpecInvalid
    from ctloop.sensors.local.schedules import schedule_views

    try:
        views = schedule_views(_settings(), model=name)
    except SpecInvalid as exc:
        return "schedule", {"error": str(exc)}, [f"schedule: cannot read the specs: {exc}"]
    if not views:
        return None
    return "schedule", views[0].as_json(), views[0].lines()


def collect_garbage_less() -> None:
    """Tune the cyclic GC for a long-running decider: a storm allocates (and frees) objects per event, and the
    default first-generation threshold (700) runs a collection every few events' worth. Nothing the sensor
    makes per event lives in a cycle, so collecting 15x less often costs memory only briefly; what startup
    built is frozen out of every later collection. Set by `ctloop sensor run`, not by the library."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def _settings(bus: str | None = None, engine: str | None = None) -> Settings:
    from ctloop.settings import Settings

    overrides = {k: v for k, v in (("bus", bus), ("engine", engine)) if v}
    return Settings(**overrides)


@sensor_app.command("run")
def run(
    bus: Annotated[Literal["kafka", "embedded"] | None, typer.Option(help="Bus; default from CTLOOP_BUS.")] = None,
    engine: Annotated[Literal["local", "argo"] | None, typer.Option(help="Engine; default CTLOOP_ENGINE.")] = None,
    group: Annotated[str, typer.Option(help="Consumer group (and decision-log name).")] = "ctloop-sensor",
    window: Annotated[float, typer.Option(help="Coalescing window in seconds (0: no coalescing).")] = 0.0,
    cooldown: Annotated[float, typer.Option(help="Seconds after a drift run before another drift run.")] = 3600.0,
    max_gpu_runs: Annotated[int, typer.Option(help="Concurrent GPU runs at most.")] = 1,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on this port.")] = None,
    recent_events: Annotated[int, typer.Option(
        help="Decided event ids kept in memory to know a producer's duplicate (about 200 bytes each); a "
             "duplicate of an older one is decided again and deduplicated by its key.")] = 200_000,
) -> None:
    """Consume data and drift events, fire the specs' scheduled ticks, and start admitted retrain runs until
    SIGINT/SIGTERM."""
    from ctloop.bus_factory import open_bus
    from ctloop.sensors.admission import AdmissionPolicy
    from ctloop.sensors.local import jsonlog
    from ctloop.sensors.local.assembly import local_sensor
    from ctloop.sensors.local.metrics import SensorMetrics
    from ctloop.workflows.engine_factory import open_engine

    if recent_events < 1:
        raise Refused(f"--recent-events must be at least 1, got {recent_events}")
    jsonlog.configure()
    settings = _settings(bus, engine)
    metrics = SensorMetrics()
    if metrics_port is not None:
        port = metrics.serve(metrics_port)
        typer.echo(json.dumps({"msg": "metrics", "port": port}), err=True)
    policy = AdmissionPolicy(window_s=window, drift_cooldown_s=cooldown, max_gpu_runs=max_gpu_runs)
    with closing(open_bus(settings)) as the_bus:
        # The sensor outlives its runs, so it may restart those a crash of its process interrupted.
        sensor = local_sensor(settings, the_bus, open_engine(settings, retry_interrupted=2), group=group,
                              policy=policy, metrics=metrics, recent_events=recent_events)
        collect_garbage_less()
        sensor.run_until_signalled()


@sensor_app.command("render")
def sensor_render(
    out: Annotated[Path | None, typer.Option(help="Write one file per object here instead of printing.")] = None,
) -> None:
    """The sensor manifests (EventBus, EventSources, Sensors) as YAML."""
    from ctloop.sensors.render import render_manifests, write_files

    files = render_manifests(_settings())
    if out is None:
        typer.echo("---\n".join(files.values()), nl=False)
        return
    for name in write_files(files, out):
        typer.echo(f"wrote {out / name}")


def render(
    directory: Annotated[Path, typer.Option("--dir", help="Where generated manifests live.")] = Path(
        "k8s/base/generated"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if any file is stale.")] = False,
) -> None:
    """Render every generated manifest (workflows and sensors) into k8s/base/generated/."""
    from ctloop.sensors.render import all_manifests, stale_files, write_files

    try:
        files = all_manifests(_settings())
    except (ImportError, ValueError) as exc:
        raise Refused(f"cannot render: {exc}") from None
    if check:
        stale = stale_files(files, directory)
        for name in stale:
            typer.echo(f"stale: {directory / name}", err=True)
        if stale:
            typer.echo("run `ctloop render` and commit the result", err=True)
            raise typer.Exit(1)
        typer.echo(f"{len(files)} generated manifests are fresh")
        return
    changed = write_files(files, directory)
    typer.echo(f"{len(changed)} of {len(files)} manifests updated in {directory}")


@sensor_app.command("webhook")
def webhook(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 12000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the manual-trigger webhook: POST /retrain {"model", "uri"} with a bearer token."""
    from ctloop.bus_factory import open_bus
    from ctloop.sensors.local.webhook import WebhookServer, token_from_env

    settings = _settings()
    token = token_from_env()
    if not token:
        raise Refused("no bearer token for the webhook", fix="set CTLOOP_WEBHOOK_TOKEN to the token it requires")
    with closing(open_bus(settings)) as the_bus:
        try:
            server = WebhookServer(the_bus, settings.topics.data, token, host=host, port=port)
        except OSError as exc:
            raise Refused(f"cannot listen on {host}:{port}: {exc.strerror or exc}", fix="pick another --port") from None
        typer.echo(json.dumps({"msg": "webhook", "url": server.url}), err=True)
        signal.signal(signal.SIGTERM, lambda *_: server.shutdown_soon())
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


@sensor_app.command("poll-s3")
def poll_s3(
    prefix_uri: Annotated[str, typer.Argument(help="s3://bucket/prefix/ whose new objects are data arrivals.")],
    model: Annotated[str, typer.Option(help="Model the objects are data for.")],
    interval: Annotated[float, typer.Option(help="Seconds between listings.")] = 30.0,
    once: Annotated[bool, typer.Option(help="List once and exit.")] = False,
) -> None:
    """Emit ctloop.data.arrived once per new object under a prefix (for stores without notifications)."""
    import time

    from ctloop.bus_factory import open_bus
    from ctloop.sensors.local.s3_poller import S3Poller

    settings = _settings()
    with closing(open_bus(settings)) as the_bus, closing(S3Poller(settings, the_bus, prefix_uri, model)) as poller:
        try:
            while True:
                emitted = poller.poll()
                typer.echo(json.dumps({"msg": "polled", "emitted": len(emitted)}), err=True)
                if once:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


@emit_app.command("data-arrived")
def emit_data_arrived(
    model: Annotated[str, typer.Option(help="Model the data is for.")],
    uri: Annotated[str, typer.Option(help="URI of the data (an object or a prefix).")],
    digest: Annotated[str | None, typer.Option(help="Content digest, when known.")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (default: a new UUID).")] = None,
    gpu: Annotated[bool, typer.Option(help="Ask for a GPU run.")] = False,
) -> None:
    """Publish one ctloop.data.arrived event to the data topic and print its id."""
    from ctloop.bus_factory import open_bus
    from ctloop.events import DataArrived, new_event, to_bytes

    settings = _settings()
    payload = DataArrived(model=model, uri=uri, digest=digest, gpu=gpu)
    event = new_event(payload, id=event_id, source="urn:ctloop:cli")
    with closing(open_bus(settings)) as the_bus:
        the_bus.publish(settings.topics.data, to_bytes(event), key=model)
        the_bus.flush()
    typer.echo(event.id)


@events_app.command("list")
def events_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    event_id: Annotated[str | None, typer.Option("--event", help="Only this event id.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N decisions.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Admission decisions, newest first: triggered, deduped, coalesced, deferred, rejected, with reasons.
    Both deciders' are listed: the sensor's (`ctloop sensor run`, `decider` "sensor") and the admission
    gateway's (`ctloop gateway run`, `decider` "gateway", read from CTLOOP_GATEWAY_STORE_URL).
    The text form starts with each scheduled model's schedule, next tick and last tick decisions."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    from ctloop.modelspec import SpecInvalid
    from ctloop.sensors.local.schedules import schedule_views

    settings = _settings()
    if not as_json and event_id is None:
        try:
            views = schedule_views(settings, model=model)
        except SpecInvalid as exc:
            typer.echo(f"warning: schedules not shown: {exc}", err=True)
            views = []
        for view in views:
            typer.echo("\n".join(view.lines()))
    rows = _decisions(settings, model=model, event_id=event_id, limit=limit)
    for decider, row in rows:
        if as_json:
            typer.echo(json.dumps({**asdict(row), "decider": decider}))
            continue
        when = datetime.fromtimestamp(row.at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        latency = f" {row.latency_ms:.1f}ms" if getattr(row, "latency_ms", None) is not None else ""
        run = f" run={row.run_id}" if row.run_id else ""
        by = f" gateway={row.replica}" if decider == "gateway" else ""
        typer.echo(f"{when} {row.kind:<9} {row.model or '-'} event={row.event_id}{run}{latency}{by} {row.reason}")
    if not rows and not as_json:
        typer.echo("no decisions recorded", err=True)


def _decisions(settings: Settings, *, model: str | None, event_id: str | None,
               limit: int) -> list[tuple[str, Any]]:
    """The newest `limit` decisions of the sensor's log and the gateway's store together, newest first, each
    with its decider; within one batch (one `at`) in each log's own order."""
    import sqlalchemy as sa

    from ctloop.sensors.gateway.store import list_decisions as gateway_decisions
    from ctloop.sensors.local.decisions import list_decisions as sensor_decisions

    url = settings.gateway_store
    try:
        gateway = gateway_decisions(url, model=model, event_id=event_id, limit=limit)
    except sa.exc.SQLAlchemyError as exc:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise Unreachable(f"cannot read the admission gateway's store {shown}: {exc.__class__.__name__}: "
                      f"{str(exc).splitlines()[0]}", fix="check CTLOOP_GATEWAY_STORE_URL") from None
    rows = [*(("sensor", r) for r in sensor_decisions(settings.state_db, model=model, event_id=event_id,
                                                       limit=limit)),
            *(("gateway", r) for r in gateway)]
    return sorted(rows, key=lambda pair: pair[1].at, reverse=True)[:limit]

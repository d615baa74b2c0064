"""`ctloop outcomes run|status`: join delayed labels to served predictions and watch live model quality."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Annotated

import typer

from ctloop.failures import Refused

if TYPE_CHECKING:
    from ctloop.monitors.quality import VersionQuality

outcomes_app = typer.Typer(help="Join labels that arrive later to served predictions; live model quality.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(outcomes_app, name="outcomes")


def _seconds(value: str, what: str) -> float:
    from ctloop.cron import ScheduleError, parse_interval

    try:
        return parse_interval(value)
    except ScheduleError as exc:
        raise Refused(f"--{what}: {exc}") from None


@outcomes_app.command()
def run(
    bus: Annotated[str | None, typer.Option(help="kafka or embedded (default: settings).")] = None,
    store: Annotated[str | None, typer.Option(envvar="CTLOOP_OUTCOMES_URL",
                                              help="Outcome store URL (default: sqlite:///<home>/outcomes.db).")]
    = None,
    horizon: Annotated[str, typer.Option(help="Labels observed later than this after serving count as late.")]
    = "168h",
    window: Annotated[str, typer.Option(help="Rows landed and judged: served within this (a spec's "
                                             "quality.window wins).")] = "168h",
    land_rows: Annotated[int | None, typer.Option(help="Land only the newest N labelled rows of the window.")]
    = None,
    memory_rows: Annotated[int, typer.Option(envvar="CTLOOP_OUTCOMES_MEMORY_ROWS",
                                             help="Served rows the joiner holds in memory to join labels against "
                                                  "(older ones are looked up in the store): ~120 bytes each, "
                                                  "more with an entity key.")] = 500_000,
    evaluate_every: Annotated[float, typer.Option(help="Seconds between landings and quality evaluations.")] = 30.0,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on this port.")] = None,
    metrics_host: Annotated[str, typer.Option(help="Address /metrics binds to (0.0.0.0 for a scraper in a "
                                                    "cluster).")] = "127.0.0.1",
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: until ^C).")]
    = None,
) -> None:
    """Consume predictions and labels, land labelled rows under each spec's retrain_uri, judge live quality."""
    from ctloop.bus_factory import open_bus
    from ctloop.monitors.outcomes_service import outcomes_service
    from ctloop.settings import load_settings

    if bus not in (None, "kafka", "embedded"):
        raise Refused(f"--bus must be kafka or embedded, got {bus!r}")
    if land_rows is not None and land_rows < 1:
        raise Refused(f"--land-rows must be at least 1, got {land_rows}")
    if memory_rows < 1:
        raise Refused(f"--memory-rows must be at least 1, got {memory_rows}")
    if evaluate_every <= 0:
        raise Refused(f"--evaluate-every must be positive, got {evaluate_every}")
    horizon_s, window_s = _seconds(horizon, "horizon"), _seconds(window, "window")
    settings = load_settings(bus=bus) if bus else load_settings()
    with closing(open_bus(settings)) as event_bus:
        service = outcomes_service(settings, event_bus, store_url=store, horizon_s=horizon_s,
                                   evaluate_every_s=evaluate_every, window_s=window_s, land_rows=land_rows,
                                   memory_rows=memory_rows)
        service.on_evaluation = lambda e: [typer.echo(_line(q)) for q in e.quality]
        if metrics_port is not None:
            typer.echo(f"metrics on {metrics_host}:{service.metrics.serve(metrics_port, metrics_host)}/metrics")
        typer.echo(f"joining {settings.topics.predictions} and {settings.topics.labels} on {settings.bus} "
                   f"into {service.store.url} (the newest {memory_rows:,} served rows in memory)")
        try:
            service.run_for(duration) if duration is not None else service.run(lambda: False)
        except KeyboardInterrupt:
            pass
        finally:
            stats = service.joiner.stats
            counts = service.store.counts()
            service.close()
    typer.echo(f"{stats.messages} messages, {stats.rows} rows, {stats.labels} labels, {stats.dead_lettered} "
               f"dead-lettered; store: {counts.joined} joined, {counts.pending} pending, {counts.late} late, "
               f"{counts.duplicate} duplicate")


@outcomes_app.command()
def status(
    store: Annotated[str | None, typer.Option(envvar="CTLOOP_OUTCOMES_URL",
                                              help="Outcome store URL (default: sqlite:///<home>/outcomes.db).")]
    = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
) -> None:
    """What the store holds: predictions, and labels by state."""
    from ctloop.monitors.outcomes import OutcomeStore, default_url
    from ctloop.settings import load_settings

    with closing(OutcomeStore(store or default_url(load_settings().home))) as outcome_store:
        c = outcome_store.counts(model)
    typer.echo(f"{c.predictions} predictions; labels: {c.joined} joined rows, {c.pending} pending, {c.late} late, "
               f"{c.duplicate} duplicate")


def _line(result: VersionQuality) -> str:
    shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(result.live.metrics.items()))
    verdict = ""
    if result.judgement is not None:
        verdict = f" [{'DEGRADED' if result.judgement.degraded else 'ok'}: {result.judgement.reason}]"
    return f"{result.model} v{result.version}: {result.live.n} labelled rows {shown}{verdict}"

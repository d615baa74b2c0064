"""`ctloop monitor run|check`: the streaming drift monitor, and a one-off drift check of two files."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ctloop.failures import Refused

if TYPE_CHECKING:
    import pandas as pd

    from ctloop.monitors.alerts import WebhookNotifier
    from ctloop.monitors.detector import WindowVerdict
    from ctloop.monitors.monitor import DriftMonitor
    from ctloop.settings import Settings

monitor_app = typer.Typer(help="Watch live predictions for drift (Evidently 0.7's rules, fast path).",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")


@monitor_app.command()
def run(
    model: Annotated[str | None, typer.Option(help="Model whose predictions to watch (default: the one model with "
                                                   "a spec, when there is exactly one).")] = None,
    bus: Annotated[str | None, typer.Option(help="kafka or embedded (default: settings).")] = None,
    profile: Annotated[Path | None, typer.Option(help="Reference profile JSON; default: the champion's.")] = None,
    window_rows: Annotated[int | None, typer.Option(help="Close a window after this many rows.")] = 10_000,
    window_seconds: Annotated[float | None, typer.Option(help="Close a window after this many seconds.")] = None,
    webhook: Annotated[str | None, typer.Option(envvar="CTLOOP_MONITOR_WEBHOOK",
                                                help="Slack-compatible webhook URL for alerts.")] = None,
    trigger: Annotated[str, typer.Option(help="dataset: share >= drift share; column: any column.")] = "dataset",
    report_every: Annotated[int, typer.Option(help="Also keep a report every Nth window (0: only drift).")] = 0,
    clean_windows: Annotated[int, typer.Option(help="Clean windows that end a drift episode.")] = 3,
    cooldown: Annotated[float, typer.Option(help="Minimum seconds between alerts.")] = 3600.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: run until ^C).")]
    = None,
    runtime: Annotated[str, typer.Option(help="embedded: the bus consumer loop; faust: a Faust worker (Kafka).")]
    = "embedded",
) -> None:
    """Consume the prediction topic, publish drift events, send one alert per drift episode."""
    from ctloop.bus_factory import open_bus
    from ctloop.monitors.alerts import AlertPolicy, WebhookNotifier
    from ctloop.monitors.assembly import drift_monitor, monitor_service
    from ctloop.monitors.monitor import MonitorConfig
    from ctloop.monitors.window import WindowPolicy
    from ctloop.settings import load_settings

    if bus not in (None, "kafka", "embedded"):
        raise Refused(f"--bus must be kafka or embedded, got {bus!r}")
    if runtime not in ("embedded", "faust"):
        raise Refused(f"--runtime must be embedded or faust, got {runtime!r}")
    if trigger not in ("dataset", "column"):
        raise Refused(f"--trigger must be dataset or column, got {trigger!r}")
    settings = load_settings(bus=bus) if bus else load_settings()
    model = model or _only_model(settings)
    try:
        config = MonitorConfig(
            window=WindowPolicy(max_rows=window_rows, max_seconds=window_seconds),
            alerts=AlertPolicy(clean_windows=clean_windows, cooldown_s=cooldown),
            trigger=_trigger(trigger),
            report_every=report_every,
        )
        notifier = WebhookNotifier(webhook) if webhook else None
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if runtime == "faust":
        _run_faust(settings, drift_monitor(settings, model, config, profile=profile), notifier)
        return
    with closing(open_bus(settings)) as event_bus:
        service = monitor_service(settings, event_bus, model, config, profile=profile, notifier=notifier)
        service.on_outcome = lambda o: typer.echo(_summary(o.verdict, o.drifted, o.report_uri))
        version = service.monitor.reference.version
        typer.echo(f"monitoring {model}" + (f" v{version}" if version else "")
                   + f" on {settings.bus}:{settings.topics.predictions}")
        try:
            stats = service.run_for(duration) if duration is not None else service.run(lambda: False)
        except KeyboardInterrupt:
            stats = service.stats
        finally:
            service.close()
    typer.echo(f"{stats.messages} messages, {stats.rows} rows, {stats.windows} windows, "
               f"{stats.drift_events} drift events, {stats.alerts_sent} alerts, {stats.dead_lettered} dead-lettered")


def _run_faust(settings: Settings, monitor: DriftMonitor, notifier: WebhookNotifier | None) -> None:
    from faust import Worker

    from ctloop.bus_factory import open_bus
    from ctloop.monitors.faust_app import FaustRuntime, create_app

    if settings.bus != "kafka":
        raise Refused("--runtime faust reads Kafka: use --bus kafka (or CTLOOP_BUS=kafka)")
    typer.echo(f"faust worker for {monitor.model} on kafka:{settings.topics.predictions}")
    app = create_app(FaustRuntime(monitor, open_bus(settings), settings, notifier))
    Worker(app, loglevel="warning").execute_from_commandline()


def _only_model(settings: Settings) -> str:
    """The model of the one spec under the home, for a `monitor run` not told which; anything else is refused,
    since a monitor of a model nothing serves would watch nothing, silently."""
    from ctloop.modelspec import load_specs, specs_dir

    directory = specs_dir(settings)
    names = [spec.name for spec in load_specs(directory)]
    if len(names) == 1:
        return names[0]
    found = f"the specs under {directory} name {', '.join(names)}" if names else f"there is no spec under {directory}"
    raise Refused(f"--model is required: {found}; name the model whose predictions to watch")


def _trigger(value: str) -> Literal["dataset", "column"]:
    return "column" if value == "column" else "dataset"


def _summary(verdict: WindowVerdict, drifted: bool, report_uri: str | None) -> str:
    state = "DRIFT" if drifted else "ok"
    cols = ",".join(verdict.drifted_columns) or "-"
    tail = f" report={report_uri}" if report_uri else ""
    return (f"[{state}] {verdict.start.isoformat()}..{verdict.end.isoformat()} rows={verdict.rows} "
            f"share={verdict.drifted_share:.2f} drifted={cols} bad={sum(verdict.bad_rows.values())}{tail}")


@monitor_app.command()
def check(
    reference: Annotated[Path, typer.Option(help="Reference data (CSV or parquet).")],
    current: Annotated[Path, typer.Option(help="Current data (CSV or parquet).")],
    report: Annotated[Path | None, typer.Option(help="Write Evidently's HTML drift report here.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Comma-separated numeric columns (default: by dtype).")]
    = None,
    categorical: Annotated[str | None, typer.Option(help="Comma-separated categorical columns (default: by dtype).")]
    = None,
    sample_rows: Annotated[int, typer.Option(help="Reference rows kept in the profile.")] = 5000,
) -> None:
    """Drift of CURRENT against REFERENCE by the monitor's fast path; exits 1 when the dataset drifts."""
    from rich.console import Console
    from rich.table import Table

    from ctloop.monitors.detector import DriftDetector
    from ctloop.monitors.report import drift_report_html
    from ctloop.profile import build_profile

    ref_frame, cur_frame = _read(reference), _read(current)
    num, cat = _column_kinds(ref_frame, cur_frame, numeric, categorical)
    try:
        profile = build_profile(ref_frame, numeric=num, categorical=cat, sample_rows=sample_rows)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    verdict = DriftDetector(profile).detect_frame(cur_frame[[c for c in [*num, *cat] if c in cur_frame]])
    table = Table(title=f"Drift of {current.name} against {reference.name}")
    for heading in ("column", "kind", "test", "score", "threshold", "drift"):
        table.add_column(heading)
    for name, col in verdict.columns.items():
        kind = "numeric" if name in num else "categorical"
        table.add_row(name, kind, col.stattest, f"{col.score:.4g}", f"{col.threshold:g}",
                      "[red]yes[/red]" if col.drifted else "no")
    for name in verdict.untested:
        table.add_row(name, "numeric" if name in num else "categorical", "-", "-", "-", "untested (no values)")
    console = Console()
    console.print(table)
    console.print(f"drifted share {verdict.drifted_share:.2f}: dataset drift "
                  + ("[red]DETECTED[/red]" if verdict.dataset_drift else "not detected")
                  + f"; bad rows {verdict.bad_rows}")
    if report is not None:
        html = drift_report_html(profile.to_frame(), cur_frame, numeric=num, categorical=cat)
        report.write_text(html)
        console.print(f"report written to {report}")
    if verdict.dataset_drift:
        raise typer.Exit(1)


def _read(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise Refused(f"no such file: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise Refused(f"unsupported file type {path.suffix!r} for {path} (use .csv or .parquet)")


def _column_kinds(
    ref: pd.DataFrame, cur: pd.DataFrame, numeric: str | None, categorical: str | None
) -> tuple[list[str], list[str]]:
    import pandas as pd

    def split(value: str) -> list[str]:
        return [c.strip() for c in value.split(",") if c.strip()]

    if numeric is not None or categorical is not None:
        num, cat = split(numeric or ""), split(categorical or "")
        missing = [c for c in [*num, *cat] if c not in ref or c not in cur]
        if missing:
            raise Refused(f"columns {missing} are not in both files")
        return num, cat
    shared = [c for c in ref.columns if c in cur.columns]
    if not shared:
        raise Refused("the two files have no column in common")
    num = [c for c in shared if pd.api.types.is_numeric_dtype(ref[c]) and not pd.api.types.is_bool_dtype(ref[c])]
    return num, [c for c in shared if c not in num]

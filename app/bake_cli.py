"""`ctloop bake run`: judge open bake windows on live labels and roll back a worse champion.

Here, in the application layer, because a bake joins two components that do not import each other:
live quality from the outcome store (`ctloop.monitors.bake`) and the registry's rollback
(`ctloop.deploy.bake`)."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Annotated

import typer

from ctloop.failures import Failure, Refused


def register(app: typer.Typer) -> None:
    app.command("bake")(bake_command)


def bake_command(
    model: Annotated[list[str] | None, typer.Option(help="Only this model (repeat for more); default: every "
                                                        "spec with policy.bake.")] = None,
    store: Annotated[str | None, typer.Option(envvar="CTLOOP_OUTCOMES_URL",
                                              help="Outcome store URL (default: sqlite:///<home>/outcomes.db).")]
    = None,
    webhook: Annotated[str | None, typer.Option(envvar="CTLOOP_MONITOR_WEBHOOK",
                                                help="Slack-compatible webhook URL for rollback alerts.")] = None,
    every: Annotated[float, typer.Option(help="Seconds between judgements.")] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="Judge each open bake once and exit.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI; default: the settings' one.")]
    = None,
) -> None:
    """Judge each open bake window (after a promotion, spec `policy.bake`): roll a champion worse than the
    previous one on the same live labels back, with the evidence in the audit trail and an alert."""
    from ctloop.bus_factory import open_bus
    from ctloop.deploy.bake import RegistryBakes
    from ctloop.modelspec import load_specs, specs_dir
    from ctloop.monitors.alerts import AlertLedger, WebhookNotifier
    from ctloop.monitors.bake import bake_once
    from ctloop.monitors.outcomes import OutcomeStore, default_url
    from ctloop.settings import load_settings

    if every <= 0:
        raise Refused(f"--every must be positive, got {every}")
    settings = load_settings(**({"mlflow_tracking_uri": tracking_uri} if tracking_uri else {}))
    specs = [s for s in load_specs(specs_dir(settings)) if s.policy.bake is not None]
    if model:
        unknown = sorted(set(model) - {s.name for s in specs})
        if unknown:
            raise Refused(f"no spec with policy.bake for {unknown} under {specs_dir(settings)}")
        specs = [s for s in specs if s.name in model]
    if not specs:
        raise Refused(f"no spec under {specs_dir(settings)} sets policy.bake; nothing to judge")
    try:
        notifier = WebhookNotifier(webhook) if webhook else None
    except ValueError as exc:
        raise Refused(str(exc)) from None
    with closing(open_bus(settings)) as bus, closing(OutcomeStore(store or default_url(settings.home))) as outcomes:
        bakes = RegistryBakes(settings.tracking_uri, bus=bus, models_topic=settings.topics.models)
        # Apart from the drift monitor's alert records: one writer per record.
        ledger = AlertLedger(settings.objects_uri.rstrip("/") + "/bake", s3_endpoint_url=settings.s3_endpoint_url)
        try:
            while True:
                for spec in specs:
                    try:
                        verdict = bake_once(spec, outcomes, bakes, notifier=notifier, ledger=ledger)
                    except Failure as exc:
                        if once:
                            raise
                        # The registry or the store may come back: the loop judges again next round.
                        typer.echo(f"{spec.name}: not judged this round: {exc}", err=True)
                        continue
                    if verdict is not None:
                        typer.echo(f"{spec.name} v{verdict.version}: {verdict.outcome}: {verdict.reason}")
                if once:
                    return
                time.sleep(every)
        except KeyboardInterrupt:
            pass

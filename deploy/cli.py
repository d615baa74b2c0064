"""`ctloop models list|show`, `ctloop promote`, `ctloop rollback`, `ctloop serve`."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ctloop.failures import Refused

models_app = typer.Typer(help="Registered models: versions, aliases, decisions, audit trail.", no_args_is_help=True)

TrackingUri = Annotated[str | None, typer.Option(help="MLflow tracking URI; default: the settings' one.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Actor = Annotated[str | None, typer.Option(help="Who does this, for the audit trail; default: the OS user.")]

# Parts of `ctloop models show` that other components own (the sensors add the model's schedule):
# model name -> (JSON key, JSON value, text lines), or None when they have nothing on that model.
ModelSection = Callable[[str], tuple[str, Any, list[str]] | None]
model_sections: list[ModelSection] = []


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("serve")(serve_command)


def _settings(**overrides: Any):
    from ctloop.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else "-"


@models_app.command("list")
def list_models(tracking_uri: TrackingUri = None, as_json: AsJson = False) -> None:
    """Every registered model with its champion, previous and challenger versions."""
    from ctloop.deploy.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry

    settings = _settings(mlflow_tracking_uri=tracking_uri)
    models = Registry(settings.tracking_uri).models()
    rows = [{"name": m.name, **{a: m.aliases.get(a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}} for m in models]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no registered models")
    for row in rows:
        typer.echo(f"{row['name']}  champion={row[CHAMPION] or '-'}  previous={row[PREVIOUS] or '-'}"
                   f"  challenger={row[CHALLENGER] or '-'}")


@models_app.command("show")
def show_model(name: str, tracking_uri: TrackingUri = None, as_json: AsJson = False) -> None:
    """Versions (aliases, metrics, decision, provenance) and the audit trail of NAME."""
    from ctloop.deploy.registry import Registry

    settings = _settings(mlflow_tracking_uri=tracking_uri)
    registry = Registry(settings.tracking_uri)
    model = registry.model(name)
    versions = registry.versions(name)
    doc = {
        "name": name,
        "aliases": model.aliases,
        "versions": [{
            "version": v.version, "aliases": list(v.aliases), "created": _when(v.created_ms), "source": v.source,
            "decision": v.decision, "reasons": v.reasons, "metrics": v.metrics,
            "provenance": v.provenance,
        } for v in versions],
        "audit": model.audit,
    }
    bake = _open_bake(registry, name, settings)
    if bake is not None:
        doc["bake"] = bake
    sections = [section for provide in model_sections if (section := provide(name)) is not None]
    doc.update({key: value for key, value, _ in sections})
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"model {name}  " + "  ".join(f"{a}={v}" for a, v in sorted(model.aliases.items())))
    for v in doc["versions"]:
        metrics = " ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items()))
        roles = f" [{','.join(v['aliases'])}]" if v["aliases"] else ""
        typer.echo(f"  v{v['version']}{roles}  {v['created']}  decision={v['decision'] or '-'}  {metrics}")
        prov = v["provenance"]
        typer.echo(f"      event={prov['event_id'] or '-'} data={prov['data_digest'] or '-'}"
                   f" code={prov['code_version'] or '-'} run={prov['run_id'] or '-'}")
        for reason in v["reasons"]:
            typer.echo(f"      - {reason}")
    typer.echo("audit:")
    for entry in doc["audit"]:
        why = entry.get("reason") or "; ".join(entry.get("reasons", []))
        typer.echo(f"  {entry['ts']}  {entry['action']:<8} v{entry.get('version', '-')}  by {entry['actor']}"
                   f"{'  (manual)' if entry.get('manual') else ''}  {why}")
    if bake is not None:
        typer.echo(f"bake: v{bake['version']} on probation against v{bake['previous']} from {bake['opened_at']}"
                   f" until {bake['window_end']} (judged by `ctloop bake`)")
    for _, _, lines in sections:
        typer.echo("\n".join(lines))


def _open_bake(registry: Any, name: str, settings: Any) -> dict[str, str] | None:
    """The model's open bake window, when its spec sets `policy.bake` and the champion is on probation."""
    from datetime import timedelta

    from ctloop.deploy.bake import RegistryBakes
    from ctloop.modelspec import SpecInvalid, SpecNotFound, load_spec

    try:
        rule = load_spec(name, settings).policy.bake
    except (SpecNotFound, SpecInvalid):
        return None
    baking = RegistryBakes(registry).baking(name) if rule is not None else None
    if rule is None or baking is None:
        return None
    end = baking.opened_at + timedelta(seconds=rule.window_s)
    return {"version": baking.version, "previous": baking.previous, "opened_at": baking.opened_at.isoformat(),
            "window_end": end.isoformat()}


def promote_command(
    name: str,
    version: str,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail (required).")],
    actor: Actor = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Make VERSION the champion of NAME by hand; the old champion becomes `previous`."""
    from ctloop.bus_factory import open_bus
    from ctloop.deploy.promotion import promote

    settings = _settings(mlflow_tracking_uri=tracking_uri)
    with closing(open_bus(settings)) as bus:
        result = promote(settings.tracking_uri, name, version, actor=actor or getpass.getuser(), reason=reason,
                         manual=True, bus=bus, models_topic=settings.topics.models)
    if not result.changed:
        typer.echo(f"{name} version {version} is already the champion; nothing changed")
        return
    typer.echo(f"{name}: champion {result.previous or '-'} -> {result.version} (by {result.actor}: {reason})")


def rollback_command(
    name: str,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "manual rollback",
    actor: Actor = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Make NAME's `previous` version the champion again."""
    from ctloop.bus_factory import open_bus
    from ctloop.deploy.promotion import rollback

    settings = _settings(mlflow_tracking_uri=tracking_uri)
    with closing(open_bus(settings)) as bus:
        result = rollback(settings.tracking_uri, name, actor=actor or getpass.getuser(), reason=reason, bus=bus,
                          models_topic=settings.topics.models)
    typer.echo(f"{name}: rolled back champion {result.previous} -> {result.version} (by {result.actor}: {reason})")


def serve_command(
    model: Annotated[str, typer.Option(help="Registered model whose champion is served.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    poll: Annotated[float, typer.Option(help="Seconds between checks of the champion alias.")] = 2.0,
    bus: Annotated[str | None, typer.Option(help="embedded or kafka; default: the settings' bus.")] = None,
    shadow: Annotated[str | None, typer.Option(
        help="Also score this alias (challenger or previous) on every request and log it as role 'shadow'; "
             "the champion still answers.")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Serve models:/MODEL@champion with MLflow's scoring protocol (POST /invocations; GET /ping, /version,
    /metrics), following promotions."""
    import logging

    from ctloop.bus_factory import open_bus
    from ctloop.deploy.serving import serve

    if bus not in (None, "embedded", "kafka"):
        raise Refused(f"--bus must be embedded or kafka, got {bus!r}")
    if poll <= 0:
        raise Refused(f"--poll must be positive, got {poll}")
    if shadow not in (None, "challenger", "previous"):
        raise Refused(f"--shadow must be challenger or previous, got {shadow!r}")
    settings = _settings(mlflow_tracking_uri=tracking_uri, bus=bus)
    with closing(open_bus(settings)) as event_bus:
        # After the bus is open: a broker that does not answer is one error line, not the client's log.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # kafka-python logs every connection and metadata refresh at INFO; serving's own lines are what matter.
        logging.getLogger("kafka").setLevel(logging.WARNING)
        serve(settings.tracking_uri, model, host=host, port=port, poll_s=poll, bus=event_bus,
              predictions_topic=settings.topics.predictions, models_topic=settings.topics.models, shadow=shadow)

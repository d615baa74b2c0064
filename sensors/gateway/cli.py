"""`ctloop gateway run`: one replica of the cluster's admission gateway."""

from __future__ import annotations

from typing import Annotated

import typer

gateway_app = typer.Typer(help="The admission gateway: admission control behind the cluster's Argo Events Sensors.",
                          no_args_is_help=True)


@gateway_app.command("run")
def run(
    group: Annotated[str, typer.Option(help="Consumer group on the admission topic; replicas share it.")] =
        "ctloop-gateway",
    window: Annotated[float, typer.Option(help="Coalescing window in seconds (0: no coalescing).")] = 0.0,
    cooldown: Annotated[float, typer.Option(help="Seconds after a drift run before another drift run.")] = 3600.0,
    max_gpu_runs: Annotated[int, typer.Option(help="Concurrent GPU runs at most, over all replicas.")] = 1,
) -> None:
    """Consume admission requests (CTLOOP_TOPICS__ADMISSION) as one replica of `group`, decide them with the
    sensor's admission rules, keep state and decisions in CTLOOP_GATEWAY_STORE_URL, and submit admitted runs to
    CTLOOP_ENGINE, until SIGINT/SIGTERM."""
    from ctloop.kafka_bus import KafkaBus
    from ctloop.sensors.admission import AdmissionPolicy
    from ctloop.sensors.gateway.assembly import gateway
    from ctloop.sensors.gateway.submitter import open_submitter
    from ctloop.sensors.local import jsonlog
    from ctloop.settings import Settings

    jsonlog.configure()
    settings = Settings()
    policy = AdmissionPolicy(window_s=window, drift_cooldown_s=cooldown, max_gpu_runs=max_gpu_runs)
    bus = KafkaBus(settings.kafka_bootstrap, connect_timeout_s=settings.kafka_connect_timeout_s)
    try:
        gateway(settings, bus, open_submitter(settings), group=group, policy=policy).run_until_signalled()
    finally:
        bus.close()

"""A gateway replica as its own process, for the kill tests and the bench: settings from CTLOOP_* env, wired as
`ctloop gateway run` wires it except the engine, which is a `LedgerEngine` (runs counted in a SQLite ledger)
or `Instant` (every run accepted and finished at once, so that a bench measures the gateway alone).

Usage: python -m tests.sensors.gateway.gateway_process GROUP REPLICA (--ledger DB | --instant)
           [--batch-size N] [--status-interval SECONDS]
"""

from __future__ import annotations

import argparse

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway import gateway
from ctloop.settings import Settings
from ctloop.workflows.engine import RunHandle, RunRequest, RunStatus
from tests.sensors.ledger import LedgerEngine


class Instant:
    """An engine that accepts every run at once; the gateway's store records what it submitted."""

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        return RunHandle(run_id=f"run-{request.idempotency_key}", idempotency_key=request.idempotency_key or "",
                         status="Succeeded")

    def status(self, run_id: str) -> RunStatus:
        return "Succeeded"

    def close(self) -> None:
        """Nothing to release."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("group")
    parser.add_argument("replica")
    engines = parser.add_mutually_exclusive_group(required=True)
    engines.add_argument("--ledger")
    engines.add_argument("--instant", action="store_true")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--status-interval", type=float, default=0.05)
    args = parser.parse_args()
    settings = Settings()
    bus = KafkaBus(settings.kafka_bootstrap, client_id=f"gateway-{args.replica}")
    engine = LedgerEngine(args.ledger) if args.ledger else Instant()
    try:
        gateway(settings, bus, engine, group=args.group, replica=args.replica, policy=AdmissionPolicy(window_s=0),
                batch_size=args.batch_size, status_interval_s=args.status_interval).run_until_signalled(0.05)
    finally:
        bus.close()
        engine.close()


if __name__ == "__main__":
    main()

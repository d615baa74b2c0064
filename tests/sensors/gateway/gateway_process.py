"""A gateway replica as its own process, for kill tests: settings from CTLOOP_* env, runs counted by a LedgerEngine.

Usage: python -m tests.sensors.gateway.gateway_process LEDGER_DB GROUP REPLICA
"""

from __future__ import annotations

import sys

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway import gateway
from ctloop.settings import Settings
from tests.sensors.ledger import LedgerEngine


def main() -> None:
    ledger, group, replica = sys.argv[1:4]
    settings = Settings()
    bus = KafkaBus(settings.kafka_bootstrap, client_id=f"gateway-{replica}")
    engine = LedgerEngine(ledger)
    try:
        gateway(settings, bus, engine, group=group, replica=replica, policy=AdmissionPolicy(window_s=0),
                status_interval_s=0.05).run_until_signalled(0.05)
    finally:
        bus.close()
        engine.close()


if __name__ == "__main__":
    main()

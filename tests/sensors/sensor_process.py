"""A sensor as its own process, for kill tests: settings from CTLOOP_* env, runs counted by a LedgerEngine.

Usage: python -m tests.sensors.sensor_process LEDGER_DB BATCH_SIZE
"""

from __future__ import annotations

import sys

from ctloop.kafka_bus import KafkaBus
from ctloop.settings import Settings
from tests.sensors.helpers import make_sensor
from tests.sensors.ledger import LedgerEngine


def main() -> None:
    settings = Settings()
    bus = KafkaBus(settings.kafka_bootstrap, client_id="ctloop-sensor-proc")
    engine = LedgerEngine(sys.argv[1])
    sensor = make_sensor(settings, bus, engine, batch_size=int(sys.argv[2]))
    try:
        sensor.run_until_signalled()
    finally:
        bus.close()
        engine.close()


if __name__ == "__main__":
    main()

"""A sensor with its local engine in one process, as `ctloop sensor run` wires them (an engine
that restarts interrupted runs), for SIGKILL tests.

Usage: python -m tests.reliability.chaos_process TRAIN_SECONDS   (settings from CTLOOP_* env)
"""

from __future__ import annotations

import sys

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.assembly import local_sensor
from ctloop.settings import Settings
from ctloop.workflows.engine import Engine
from ctloop.workflows.local.engine import LocalEngine
from tests.reliability.cheap_template import cheap_retrain


def main() -> None:
    settings = Settings()
    run_sensor(settings, LocalEngine(settings, template=cheap_retrain(float(sys.argv[1])), retry_interrupted=2),
               client_id="ctloop-chaos")


def run_sensor(settings: Settings, engine: Engine, *, client_id: str) -> None:
    """The sensor on `engine`, as `ctloop sensor run` wires it (no coalescing window), until SIGTERM."""
    # A short session, so that the next process takes over a killed one's partition in seconds.
    bus = KafkaBus(settings.kafka_bootstrap, client_id=client_id, session_timeout_ms=2000)
    sensor = local_sensor(settings, bus, engine, policy=AdmissionPolicy(window_s=0), status_interval_s=0.1)
    try:
        sensor.run_until_signalled()
    finally:
        bus.close()


if __name__ == "__main__":
    main()

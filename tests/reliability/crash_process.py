"""A sensor, its local engine and the promoter (the engine's in-process steps) in one process, for the
crash-point matrix: a crash point armed by CTLOOP_CRASH_AT kills all three, as a pod's death would.

Usage: python -m tests.reliability.crash_process   (settings from CTLOOP_* env)
"""

from __future__ import annotations

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.local.assembly import local_sensor
from ctloop.settings import Settings
from ctloop.workflows.local.engine import LocalEngine
from tests.reliability.crash_template import crash_retrain


def main() -> None:
    settings = Settings()
    # A short session, so that the restarted process takes over the killed one's partition in seconds.
    bus = KafkaBus(settings.kafka_bootstrap, client_id="ctloop-crash", session_timeout_ms=2000)
    engine = LocalEngine(settings, template=crash_retrain(), retry_interrupted=2)
    sensor = local_sensor(settings, bus, engine, policy=AdmissionPolicy(window_s=0), snapshot_digests=False,
                          status_interval_s=0.1)
    try:
        sensor.run_until_signalled()
    finally:
        bus.close()


if __name__ == "__main__":
    main()

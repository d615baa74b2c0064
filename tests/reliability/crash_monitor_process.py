"""The drift monitor as `ctloop monitor run` assembles it, on Kafka, for the crash-point matrix; it exits
once it has committed the window of the predictions topic's last message.

Usage: python -m tests.reliability.crash_monitor_process PROFILE WINDOW_ROWS WEBHOOK LAST_OFFSET
(settings from CTLOOP_* env; model `m`, the predictions topic on one partition)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ctloop.bus import Message
from ctloop.kafka_bus import KafkaBus
from ctloop.monitors.alerts import AlertPolicy, WebhookNotifier
from ctloop.monitors.assembly import monitor_service
from ctloop.monitors.monitor import MonitorConfig
from ctloop.monitors.window import WindowPolicy
from ctloop.settings import Settings

DEADLINE_S = 120


def main() -> None:
    profile, rows, hook, last = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    settings = Settings()
    bus = KafkaBus(settings.kafka_bootstrap, client_id="ctloop-crash-monitor", session_timeout_ms=2000)
    config = MonitorConfig(window=WindowPolicy(max_rows=rows), alerts=AlertPolicy(clean_windows=3, cooldown_s=0))
    service = monitor_service(settings, bus, "m", config, profile=profile, notifier=WebhookNotifier(hook))
    done = False
    committed = service.consumer.commit

    def commit(message: Message) -> None:
        nonlocal done
        committed(message)
        done = done or message.offset >= last

    service.consumer.commit = commit  # type: ignore[method-assign]
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not done and time.monotonic() < deadline:
            service.step(0.2)
    finally:
        service.close()
        bus.close()
    sys.exit(0 if done else 3)


if __name__ == "__main__":
    main()

"""A consumer that takes one message and then hangs without committing, to be killed by a test.

Run as `python -m tests.ctloop.consumer_process BUS TARGET TOPIC GROUP` where BUS is `embedded`
(TARGET: the SQLite file) or `kafka` (TARGET: the bootstrap address). It prints `GOT <offset>`
once it holds a message.
"""

from __future__ import annotations

import sys
import time

from ctloop.bus import Bus
from ctloop.embedded_bus import EmbeddedBus
from ctloop.kafka_bus import KafkaBus


def main(kind: str, target: str, topic: str, group: str) -> None:
    # A short session lets the group hand the killed member's partition on within about a second.
    bus: Bus = EmbeddedBus(target) if kind == "embedded" else KafkaBus(target, session_timeout_ms=1000)
    consumer = bus.consumer([topic], group)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        messages = consumer.poll(timeout_s=0.5, max_records=1)
        if messages:
            print(f"GOT {messages[0].offset}", flush=True)
            time.sleep(3600)
    sys.exit("no message arrived within 60s")


if __name__ == "__main__":
    main(*sys.argv[1:5])

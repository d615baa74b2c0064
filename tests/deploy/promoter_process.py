"""Processes for the lock and crash tests, sharing nothing with the test but the `mlflow server` (and,
for announcements, a bus file). Each prints `READY` once it is about to work.

- `python -m tests.deploy.promoter_process hold URL MODEL TTL`: take the model's lock and keep it.
- `python -m tests.deploy.promoter_process exclusive URL MODEL LOG N`: N times take the lock, append
  `enter`/`leave` stamps (CLOCK_MONOTONIC, shared by every process of the machine) to LOG inside it.
- `python -m tests.deploy.promoter_process promote URL MODEL BUS V1 V2 TTL`: promote V1 and V2 in turn
  by hand, announcing on the embedded bus BUS, until killed.
"""

from __future__ import annotations

import sys
import time

from ctloop.deploy import lock
from ctloop.deploy.lock import Lease, model_lock
from ctloop.deploy.registry import Registry


def _short_lease(ttl: str) -> None:
    seconds = float(ttl)
    lock.DEFAULT_LEASE = Lease(ttl_s=seconds, renew_every_s=seconds / 6, margin_s=seconds / 3, wait_s=120)


def hold(url: str, model: str, ttl: str) -> None:
    _short_lease(ttl)
    with model_lock(Registry(url), model):
        print("READY", flush=True)
        time.sleep(3600)


def exclusive(url: str, model: str, log: str, n: str) -> None:
    registry = Registry(url)
    print("READY", flush=True)
    with open(log, "a") as out:
        for _ in range(int(n)):
            with model_lock(registry, model):
                out.write(f"enter {time.monotonic():.6f}\n")
                out.flush()
                time.sleep(0.02)
                out.write(f"leave {time.monotonic():.6f}\n")
                out.flush()


def promote_forever(url: str, model: str, bus_path: str, v1: str, v2: str, ttl: str) -> None:
    from ctloop.deploy.promotion import promote
    from ctloop.embedded_bus import EmbeddedBus

    _short_lease(ttl)
    registry, bus = Registry(url), EmbeddedBus(bus_path)
    print("READY", flush=True)
    for i in range(10_000):
        promote(registry, model, (v1, v2)[i % 2], actor="killable", reason=f"turn {i}", manual=True, bus=bus,
                models_topic="models")


if __name__ == "__main__":
    commands = {"hold": hold, "exclusive": exclusive, "promote": promote_forever}
    commands[sys.argv[1]](*sys.argv[2:])

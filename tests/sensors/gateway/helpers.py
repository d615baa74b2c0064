"""What the gateway tests share: an admission request as the rendered Sensors' Kafka trigger writes it, and
stepping one replica until something holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ctloop.sensors.gateway import Gateway


def request(model: str, digest: str, event_id: str) -> bytes:
    """An admission request for `model`'s data `digest`, decided on as event `event_id`."""
    return json.dumps({"model": model, "data-uri": f"file:///data/{model}/{digest}", "event-id": event_id,
                       "trigger": "data", "idempotency-key": f"{model}-{digest}", "gpu": "false"}).encode()


def step_until(replica: Gateway, predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, (f"timed out; owned {sorted(replica.store.owned)}, decisions "
                                             f"{[(d.event_id, d.kind) for d in replica.store.decisions()]}")
        replica.step(0.1)

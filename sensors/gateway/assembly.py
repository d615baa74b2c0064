"""The gateway as ctloop runs it: `ctloop gateway run`, the tests and the bench assemble it here."""

from __future__ import annotations

import os
import socket
from typing import Any

from ctloop.kafka_bus import KafkaBus
from ctloop.sensors.admission import AdmissionPolicy
from ctloop.sensors.gateway.gateway import Gateway
from ctloop.sensors.gateway.store import GatewayStore
from ctloop.sensors.gateway.submitter import Submitter
from ctloop.settings import Settings

DEFAULT_GROUP = "ctloop-gateway"


def replica_name() -> str:
    """This replica's name in the store's records: the pod's (host) name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def gateway(settings: Settings, bus: KafkaBus, submitter: Submitter, *, group: str = DEFAULT_GROUP,
            policy: AdmissionPolicy | None = None, replica: str | None = None, **tuning: Any) -> Gateway:
    """One replica consuming `settings.topics.admission` in consumer group `group`, with its state in
    `settings.gateway_store`, submitting to `submitter`. The caller owns `bus` and `submitter`; `close()` the
    gateway (or `run_until_signalled`)."""
    store = GatewayStore(settings.gateway_store, replica or replica_name())
    bus.ensure_topics([settings.topics.admission])
    return Gateway(bootstrap=settings.kafka_bootstrap, topic=settings.topics.admission,
                   deadletter_topic=settings.topics.deadletter, bus=bus, store=store, submitter=submitter,
                   group=group, policy=policy, **tuning)

"""Argo Events' part of the cluster path, on this machine: the rendered Sensors' filters and Kafka trigger.

For each event on the data and drift topics it applies the cluster sensors' filters and publishes the trigger's
payload onto the admission topic, keyed by model, as the rendered `kafka` trigger does. The payload is
`admission_payload`, whose rendered Go templates `test_render.py` runs through the real Go harness.
"""

from __future__ import annotations

import json

from ctloop.bus import Bus
from ctloop.events import EventError, parse_document
from ctloop.sensors.catalog import cluster_sensors
from ctloop.sensors.eventdata import kafka_event_data
from ctloop.sensors.filters import rejection
from ctloop.sensors.gateway import admission_payload
from ctloop.sensors.mapping import MappingError
from ctloop.sensors.spec import KafkaSource
from ctloop.settings import Settings
from ctloop.version import code_version


class ArgoEventsStandIn:
    def __init__(self, settings: Settings, bus: Bus, group: str = "argo-events") -> None:
        self.settings = settings
        self.bus = bus
        specs = [s for s in cluster_sensors(settings, code_version=code_version())
                 if isinstance(s.dependency.source, KafkaSource)]
        self.by_topic = {}
        for spec in specs:
            self.by_topic.setdefault(spec.dependency.source.topic, []).append(spec)
        self.consumer = bus.consumer(sorted(self.by_topic), group)
        self.forwarded = 0

    def step(self, timeout_s: float = 0.05) -> int:
        messages = self.consumer.poll(timeout_s=timeout_s, max_records=500)
        for message in messages:
            try:
                event, body = parse_document(message.value, max_bytes=self.settings.max_event_bytes)
            except EventError:
                continue  # the EventSource's own concern; not what admission tests
            data = kafka_event_data(message, body)
            context = {"id": event.id, "type": event.type, "source": event.source, "subject": event.subject or ""}
            for spec in self.by_topic.get(message.topic, []):
                if rejection(spec.dependency, data) is not None:
                    continue
                try:
                    payload = admission_payload(spec, data, context)
                except MappingError:
                    continue
                self.bus.publish(self.settings.topics.admission, json.dumps(payload).encode(), key=payload["model"])
                self.forwarded += 1
                break
        if messages:
            self.bus.flush()
            for message in messages:
                self.consumer.commit(message)
        return len(messages)

    def close(self) -> None:
        self.consumer.close()

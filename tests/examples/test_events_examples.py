"""The producer examples in docs/concepts/events.md, run as a new user would copy them (no ctloop code), publish
events that ctloop reads as what the page says they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctloop.events import DataArrived, parse
from tests.examples.test_readme_example import blocks

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "concepts" / "events.md"

pytestmark = pytest.mark.kafka


def test_the_documented_data_arrival_from_confluent_kafka_is_a_valid_event_keyed_by_model(
    kafka_bus, kafka_bootstrap: str, unique_topic: str
) -> None:
    code = next(b for b in blocks(PAGE, "python") if "ctloop.data.arrived" in b and "confluent_kafka" in b)
    assert '"broker:9092"' in code and '"ctloop.data"' in code, "the example's broker or topic changed: adapt here"
    kafka_bus.ensure_topics([unique_topic])
    exec(code.replace('"broker:9092"', repr(kafka_bootstrap)).replace('"ctloop.data"', repr(unique_topic)), {})

    [message] = kafka_bus.read_all(unique_topic)
    event = parse(message.value)
    assert isinstance(event.data, DataArrived)
    assert (event.type, event.data.model, event.data.uri) == (
        "ctloop.data.arrived", "houses", "s3://ctloop-data/incoming/houses/2026-11-30/")
    assert event.id.startswith("etl-") and message.key == b"houses"

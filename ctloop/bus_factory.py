"""Which bus a component talks to, as the settings say."""

from __future__ import annotations

from ctloop.bus import Bus
from ctloop.settings import Settings


def open_bus(settings: Settings) -> Bus:
    """The embedded SQLite log under `settings.home`, or Kafka at `settings.kafka_bootstrap`."""
    if settings.bus == "embedded":
        from ctloop.embedded_bus import EmbeddedBus

        settings.state_db.parent.mkdir(parents=True, exist_ok=True)
        return EmbeddedBus(settings.state_db)
    from ctloop.kafka_bus import KafkaBus

    return KafkaBus(settings.kafka_bootstrap, connect_timeout_s=settings.kafka_connect_timeout_s)

"""What the sensor logs: a line per run it starts and a count per batch at INFO, every decision at DEBUG."""

from __future__ import annotations

import logging

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.settings import Settings
from tests.sensors.helpers import arrival, drain, make_sensor
from tests.sensors.ledger import LedgerEngine


@pytest.fixture
def burst(tmp_path):
    """Five arrivals for one model in one batch, the model busy with the first: 1 run, 3 coalesced, 1 queued."""
    settings = Settings(home=tmp_path)
    bus = EmbeddedBus(settings.state_db)
    engine = LedgerEngine(tmp_path / "runs.db", instant=False)
    for n in range(5):
        bus.publish(settings.topics.data, arrival("churn", f"d{n}", f"ev-{n}"))

    def decide() -> None:
        sensor = make_sensor(settings, bus, engine)
        drain(sensor)
        sensor.close()

    yield decide
    engine.close()
    bus.close()


def lines(caplog) -> list[tuple[str, str, dict]]:
    return [(r.levelname, r.getMessage(), r.fields) for r in caplog.records if r.name == "ctloop.sensor"]


def test_at_info_a_burst_logs_its_run_and_one_count_of_its_decisions(burst, caplog):
    caplog.set_level(logging.INFO, logger="ctloop.sensor")
    burst()
    logged = lines(caplog)
    assert [(level, msg) for level, msg, _ in logged] == [("INFO", "triggered"), ("INFO", "decided")]
    assert logged[0][2]["event_id"] == "ev-0" and logged[0][2]["run_id"]
    assert logged[1][2] == {"coalesced": 3, "deferred": 4, "triggered": 1}


def test_at_debug_every_decision_has_its_line(burst, caplog):
    caplog.set_level(logging.DEBUG, logger="ctloop.sensor")
    burst()
    logged = [(msg, fields["event_id"]) for _, msg, fields in lines(caplog)]
    assert sorted(logged) == sorted([("triggered", "ev-0"), *((k, f"ev-{n}") for n in (1, 2, 3)
                                                              for k in ("deferred", "coalesced")),
                                     ("deferred", "ev-4")])

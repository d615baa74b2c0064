"""What the sensor logs: a line per run it starts and a count per batch at INFO, every decision at DEBUG."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.sensors.local.jsonlog import JsonFormatter
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


@pytest.mark.parametrize("fields", [
    {"event_id": "ev-1", "latency_ms": 1.25, "run_id": None, "at": datetime(2026, 11, 30, tzinfo=UTC)},
    {"event_id": "bad-\udc80", "big": 2**70, "where": Path("/x")},
])
def test_a_line_is_one_json_object_with_its_fields(fields):
    record = logging.getLogger("ctloop.sensor").makeRecord("ctloop.sensor", logging.INFO, "f", 1, "triggered", (),
                                                             None, extra={"fields": fields})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert (doc["level"], doc["logger"], doc["msg"]) == ("info", "ctloop.sensor", "triggered")
    assert {k: doc[k] for k in fields} == {k: v if isinstance(v, str | int | float | None) and not isinstance(v, bool)
                                           else str(v) for k, v in fields.items()}

"""The sensor's JSON lines: `log` writes the line `JsonFormatter` would, with or without a `LogRecord`."""

import io
import json
import logging

import pytest

from ctloop.sensors.local import jsonlog


@pytest.fixture
def configured(monkeypatch):
    logger = logging.getLogger("ctloop.sensor")
    saved = logger.handlers[:], logger.level, logger.propagate
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    jsonlog.configure()
    yield logger, stream
    logger.handlers[:], logger.level, logger.propagate = saved


FIELDS = {"event_id": "e-1", "model": "m\u00e9", "run_id": None, "latency_ms": 1.25, "count": 2**70}


def test_a_line_is_the_formatters_line_for_the_same_message_and_fields(configured):
    logger, stream = configured
    jsonlog.log(logger, "triggered", **FIELDS)
    jsonlog.log(logger, "submit failed", level=logging.ERROR, error="engine down")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, "triggered", (), None,
                               extra={"fields": FIELDS})
    expected = json.loads(jsonlog.JsonFormatter().format(record))
    assert abs(first.pop("ts") - expected.pop("ts")) < 5
    assert first == expected
    assert second["level"] == "error" and second["error"] == "engine down"


def test_below_the_level_nothing_is_written(configured):
    logger, stream = configured
    jsonlog.log(logger, "decided", level=logging.DEBUG, count=3)
    assert stream.getvalue() == ""


def test_another_handler_gets_records_and_the_line_is_written_once(configured):
    logger, stream = configured
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger.addHandler(Keep())
    jsonlog.log(logger, "triggered", event_id="e-2")
    assert [r.fields for r in records] == [{"event_id": "e-2"}]
    assert [json.loads(line)["event_id"] for line in stream.getvalue().splitlines()] == ["e-2"]


def test_a_stream_that_fails_is_reported_not_raised(configured, capsys):
    logger, stream = configured
    stream.close()
    jsonlog.log(logger, "triggered", event_id="e-3")

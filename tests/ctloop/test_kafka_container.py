"""The test suite's broker choice: testcontainers on the configured image where it can be had, else the local Java
broker, with the reason in one line; never an error where Docker answers but the image cannot be had."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctloop.kafka_local import LocalKafka, docker_available
from tests.fixtures.kafka import image_unavailable, start_broker

ABSENT = "ctloop/no-such-kafka:7.9.9"
needs_docker = pytest.mark.skipif(not docker_available(), reason="no Docker engine answers")


@needs_docker
def test_an_image_that_is_neither_here_nor_pullable_is_named_with_the_reason() -> None:
    reason = image_unavailable(ABSENT)
    assert reason is not None
    assert ABSENT in reason and "cannot be pulled" in reason and "\n" not in reason


@needs_docker
@pytest.mark.kafka
def test_without_the_image_the_session_falls_back_to_the_java_broker_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTLOOP_KAFKA_IMAGE", ABSENT)
    broker, line = start_broker(tmp_path)
    try:
        assert isinstance(broker, LocalKafka)
        assert line.startswith(f"local Java broker at {broker.bootstrap} (") and ABSENT in line
    finally:
        broker.stop()

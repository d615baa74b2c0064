"""The local broker: `ctloop kafka up|status|down` gives a broker any Kafka client can use; restarts keep data."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.kafka_bus import KafkaBus
from ctloop.kafka_local import LocalKafka, free_port, pid_alive
from tests.fixtures.kafka import Broker

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # A free default port: another broker on this machine may own 9092.
    env = {"CTLOOP_HOME": str(tmp_path / "home"), "CTLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    yield env
    runner.invoke(app, ["kafka", "down"], env=env)


def bootstrap_in(output: str) -> str:
    match = re.search(r"bootstrap: (127\.0\.0\.1:\d+)", output)
    assert match, f"no bootstrap address in {output!r}"
    return match.group(1)


@pytest.mark.kafka
def test_kafka_up_starts_a_broker_that_a_plain_kafka_client_can_use(cli_env: dict[str, str]) -> None:
    started = runner.invoke(app, ["kafka", "up"], env=cli_env)
    assert started.exit_code == 0, started.output
    bootstrap = bootstrap_in(started.output)
    assert bootstrap == cli_env["CTLOOP_KAFKA_BOOTSTRAP"], "the default settings reach the broker"

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", bootstrap_timeout_ms=5000)
    producer.send("hello", b"world").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        "hello", bootstrap_servers=bootstrap, group_id="plain", auto_offset_reset="earliest",
        consumer_timeout_ms=20000, bootstrap_timeout_ms=5000,
    )
    try:
        assert next(iter(consumer)).value == b"world"
    finally:
        consumer.close()

    status = runner.invoke(app, ["kafka", "status"], env=cli_env)
    assert status.exit_code == 0
    assert bootstrap in status.output

    again = runner.invoke(app, ["kafka", "up"], env=cli_env)
    assert again.exit_code == 0
    assert "already running" in again.output
    assert bootstrap_in(again.output) == bootstrap

    pid = int(re.search(r"pid (\d+)", status.output).group(1))
    stopped = runner.invoke(app, ["kafka", "down"], env=cli_env)
    assert stopped.exit_code == 0
    assert not pid_alive(pid)
    after = runner.invoke(app, ["kafka", "status"], env=cli_env)
    assert after.exit_code == 1
    assert "not running" in after.output


def test_status_and_down_without_a_broker(cli_env: dict[str, str]) -> None:
    assert runner.invoke(app, ["kafka", "status"], env=cli_env).exit_code == 1
    down = runner.invoke(app, ["kafka", "down"], env=cli_env)
    assert down.exit_code == 0
    assert "no Kafka broker running" in down.output


def test_without_java_or_docker_up_says_what_to_install(cli_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = runner.invoke(app, ["kafka", "up"], env={**cli_env, "PATH": str(empty)})
    assert result.exit_code == 1
    assert "Java" in result.output
    assert "Docker" in result.output


@pytest.mark.kafka
def test_a_restarted_broker_keeps_its_messages_and_address(local_kafka: Broker) -> None:
    if not isinstance(local_kafka, LocalKafka):
        pytest.skip("restart of the same data dir is a property of the local Java broker")
    topic = f"test-{uuid.uuid4().hex[:12]}"
    bootstrap = local_kafka.bootstrap
    bus = KafkaBus(bootstrap)
    try:
        bus.publish(topic, b"durable")
        bus.flush()
    finally:
        bus.close()

    local_kafka.restart()

    assert local_kafka.bootstrap == bootstrap
    bus = KafkaBus(bootstrap)
    consumer = bus.consumer([topic], "after-restart")
    try:
        messages = []
        for _ in range(60):
            messages += consumer.poll(timeout_s=0.5)
            if messages:
                break
        assert [m.value for m in messages] == [b"durable"]
    finally:
        consumer.close()
        bus.close()

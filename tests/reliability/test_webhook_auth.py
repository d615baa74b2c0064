"""The manual-trigger webhook on the real broker: without the right bearer token, 401 and nothing published."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from ctloop.events import parse
from ctloop.sensors.local.webhook import WebhookServer

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]
TOKEN = "s3cret-token"
BODY = json.dumps({"model": "churn", "uri": "file:///data/churn"}).encode()


@pytest.fixture
def webhook(kafka_bus, unique_topic):
    server = WebhookServer(kafka_bus, unique_topic, TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=BODY, method="POST", headers={"Content-Type": "application/json",
                                                                            **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


WRONG = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"X-Token": TOKEN},
]


def test_requests_without_the_right_token_are_refused_and_trigger_nothing(webhook, kafka_bus, unique_topic):
    for headers in WRONG:
        assert post(webhook.url, headers) == 401, headers
        assert post(webhook.url + f"?token={TOKEN}", headers) == 401, headers
    assert post(webhook.url, {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "after"}) == 202
    consumer = kafka_bus.consumer([unique_topic], "check")
    try:
        received = []
        for _ in range(20):
            received += consumer.poll(timeout_s=0.5)
            if received:
                break
        received += consumer.poll(timeout_s=1.0)
    finally:
        consumer.close()
    assert [parse(m.value).id for m in received] == ["after"], "only the authorized request published"

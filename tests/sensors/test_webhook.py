"""The local manual-trigger webhook: a bearer token guards it; a valid call publishes a data arrival."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.sensors.local.webhook import WebhookServer


@pytest.fixture
def server(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.db")
    server = WebhookServer(bus, "data", "s3cret", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()
    bus.close()


def post(url: str, body: object, token: str | None, **headers: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def data_events(server: WebhookServer) -> list:
    return [parse(m.value) for m in server.bus.consumer(["data"], "t").poll(timeout_s=0.05)]


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_a_missing_or_wrong_token_is_refused_and_nothing_published(server, token):
    status, body = post(server.url, {"model": "churn", "uri": "s3://b/k"}, token)
    assert status == 401
    assert "token" in body["error"]
    assert data_events(server) == []


def test_a_valid_call_publishes_a_data_arrival(server):
    status, body = post(server.url, {"model": "churn", "uri": "s3://b/k", "digest": "abc"}, "s3cret",
                        **{"Idempotency-Key": "manual-1"})
    assert (status, body) == (202, {"id": "manual-1"})
    [event] = data_events(server)
    assert (event.id, event.type, event.data.model, event.data.digest) == ("manual-1", "ctloop.data.arrived",
                                                                           "churn", "abc")


def test_a_bad_body_is_a_400_that_names_the_problem(server):
    status, body = post(server.url, {"model": "churn"}, "s3cret")
    assert status == 400
    assert "uri" in body["error"]
    assert data_events(server) == []


@pytest.mark.parametrize("length", ["-1", "ten"])
def test_a_content_length_that_is_no_byte_count_is_a_400(server, length):
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        connection.putrequest("POST", url.path)
        connection.putheader("Authorization", "Bearer s3cret")
        connection.putheader("Content-Length", length)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 400
        assert "Content-Length" in json.loads(response.read())["error"]
    finally:
        connection.close()
    assert data_events(server) == []

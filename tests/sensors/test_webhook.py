"""The local manual-trigger webhook: a bearer token guards it; a valid call (plain JSON or a CloudEvent in
structured or binary mode) publishes a data arrival; a refused one publishes nothing and says why."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import parse
from ctloop.sensors.local.webhook import MAX_BODY, WebhookServer


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


def send(server: WebhookServer, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    response = httpx.post(server.url, content=body, headers={"Authorization": "Bearer s3cret", **headers}, timeout=10)
    return response.status_code, response.json()


STRUCTURED = {"specversion": "1.0", "id": "ce-1", "source": "urn:example:uploader", "type": "ctloop.data.arrived",
              "time": "2026-11-30T03:00:00+00:00", "data": {"model": "churn", "uri": "s3://b/k", "digest": "d1"}}


def test_a_structured_cloudevent_is_published_as_sent(server):
    status, body = send(server, json.dumps(STRUCTURED).encode(), {"Content-Type": "application/cloudevents+json"})
    assert (status, body) == (202, {"id": "ce-1"})
    [event] = data_events(server)
    assert (event.id, event.source, event.data.model, event.data.digest) == ("ce-1", "urn:example:uploader", "churn",
                                                                             "d1")
    assert event.time.isoformat() == "2026-11-30T03:00:00+00:00"


def test_a_binary_mode_cloudevent_is_published_with_its_header_attributes(server):
    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "ce-2",
               "ce-source": "urn:example:uploader", "ce-type": "ctloop.data.arrived", "ce-subject": "churn"}
    status, body = send(server, json.dumps({"model": "churn", "uri": "s3://b/k2"}).encode(), headers)
    assert (status, body) == (202, {"id": "ce-2"})
    [event] = data_events(server)
    assert (event.id, event.source, event.subject, event.data.uri) == ("ce-2", "urn:example:uploader", "churn",
                                                                       "s3://b/k2")


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    ({**STRUCTURED, "type": "ctloop.model.promoted"}, {"Content-Type": "application/cloudevents+json"}, 400,
     "invalid ctloop.model.promoted"),
    ({**STRUCTURED, "type": "ctloop.run.finished", "data": {"run_id": "r", "model": "m", "status": "Failed"}},
     {"Content-Type": "application/cloudevents+json"}, 400, "accepts only ctloop.data.arrived"),
    ({k: v for k, v in STRUCTURED.items() if k != "id"}, {"Content-Type": "application/cloudevents+json"}, 400,
     "missing field: id"),
    ({"model": "churn", "uri": "s3://b/k"}, {"ce-specversion": "1.0", "ce-id": "x", "ce-type": "ctloop.data.arrived"},
     400, "missing field: source"),
    ({"model": "churn", "uri": "s3://b/k"}, {"Content-Type": "text/plain"}, 415, "Content-Type must be"),
])
def test_bad_cloudevents_and_media_types_are_named_and_publish_nothing(server, body, headers, status, message):
    got, reply = send(server, json.dumps(body).encode(), headers)
    assert got == status and message in reply["error"], reply
    assert data_events(server) == []


def test_a_body_over_the_limit_is_413_and_publishes_nothing(server):
    status, reply = send(server, b" " * (MAX_BODY + 1), {"Content-Type": "application/json"})
    assert status == 413 and "exceeds the limit" in reply["error"]
    chunks = iter([b" " * MAX_BODY, b"{}"])
    response = httpx.post(server.url, content=chunks, headers={"Authorization": "Bearer s3cret"}, timeout=10)
    assert response.status_code == 413
    assert data_events(server) == []


def test_a_stalled_client_does_not_hold_up_others(server):
    url = urllib.parse.urlsplit(server.url)
    stalled = socket.create_connection((url.hostname, url.port), timeout=10)
    try:
        stalled.sendall(b"POST /retrain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda i: post(server.url, {"model": "churn", "uri": f"s3://b/{i}"}, "s3cret",
                               **{"Idempotency-Key": f"k{i}"}),
                range(16)))
    finally:
        stalled.close()
    assert sorted(body["id"] for _, body in results) == sorted(f"k{i}" for i in range(16))
    assert {status for status, _ in results} == {202}
    assert sorted(e.id for e in data_events(server)) == sorted(f"k{i}" for i in range(16))

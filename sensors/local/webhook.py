"""The manual-trigger webhook, locally: POST /retrain with a bearer token publishes a data arrival.

The cluster's counterpart is the `ctloop-webhook` EventSource (same path, same token from a secret).
A request is one of three shapes, each answered `202 {"id": EVENT_ID}` once the event is on the bus:

- plain JSON (`Content-Type: application/json`): the `ctloop.data.arrived` payload, `{"model", "uri",
  "digest"?, "size"?, "gpu"?}`; the event id is the `Idempotency-Key` header, or a new one;
- CloudEvents structured mode (`Content-Type: application/cloudevents+json`): a whole
  `ctloop.data.arrived` event, id, source and time included;
- CloudEvents binary mode: the attributes in `ce-specversion`, `ce-id`, `ce-source`, `ce-type` (and
  optionally `ce-time`, `ce-subject`) headers, the payload as the JSON body.

Anything else is a 4xx whose `error` names the problem (401 token, 404 path, 405 method, 408 slow body,
413 body over the limit, 415 media type, 400 content), and nothing is published for it. Requests are
read concurrently; publishing happens on one worker thread, one event at a time, so any bus is safe.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from pydantic import ValidationError

from ctloop.bus import Bus
from ctloop.events import DataArrived, Event, EventError, new_event, parse, to_bytes
from ctloop.httpserver import (
    AppServer,
    ClientGone,
    HttpError,
    Receive,
    Scope,
    Send,
    error_body,
    header,
    read_body,
    send_json,
)

PATH = "/retrain"
TOKEN_ENV = "CTLOOP_WEBHOOK_TOKEN"
MAX_BODY = 65536
BODY_TIMEOUT_S = 10.0
SOURCE = "urn:ctloop:webhook"
_BINARY_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject")


def token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


class WebhookApp:
    """The ASGI app: authenticate, read, validate, publish; refuse with a reason at the first problem."""

    def __init__(self, bus: Bus, topic: str, token: str, *, max_body: int = MAX_BODY,
                 body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        if not token:
            raise ValueError("the webhook needs a non-empty bearer token")
        self.bus = bus
        self.topic = topic
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s
        self._expected = f"Bearer {token}".encode()
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-publish")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            event = await self._accept(scope, receive)
            await asyncio.get_running_loop().run_in_executor(self._publisher, self._publish, event)
        except HttpError as exc:
            headers = [(b"www-authenticate", b"Bearer")] if exc.status == HTTPStatus.UNAUTHORIZED else None
            await send_json(send, exc.status, error_body(str(exc), exc.kind), headers)
            return
        except ClientGone:
            return
        await send_json(send, HTTPStatus.ACCEPTED, {"id": event.id})

    async def _accept(self, scope: Scope, receive: Receive) -> Event:
        if scope["path"] != PATH:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {scope['path']}; use POST {PATH}", "NOT_FOUND")
        if scope["method"] != "POST":
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST for {PATH}", "METHOD_NOT_ALLOWED")
        given = (header(scope, b"authorization") or "").encode("latin-1")
        if not hmac.compare_digest(given, self._expected):
            raise HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token", "UNAUTHORIZED")
        body = await read_body(scope, receive, limit=self.max_body, timeout_s=self.body_timeout_s)
        return _event(scope, body)

    def _publish(self, event: Event) -> None:
        assert isinstance(event.data, DataArrived)
        try:
            self.bus.publish(self.topic, to_bytes(event), key=event.data.model)
            self.bus.flush()
        except Exception as exc:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"could not publish to {self.topic}: "
                                                            f"{type(exc).__name__}: {exc}", "BUS_UNAVAILABLE") from exc

    def close(self) -> None:
        self._publisher.shutdown(wait=True)


def _event(scope: Scope, body: bytes) -> Event:
    """The data-arrival event a request carries, in whichever of the three shapes it came."""
    media = (header(scope, b"content-type") or "application/json").partition(";")[0].strip().lower()
    binary = header(scope, b"ce-specversion") is not None
    if media == "application/cloudevents+json":
        event = _cloudevent(body)
    elif media != "application/json":
        raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be application/json or "
                                                           f"application/cloudevents+json, got {media!r}",
                        "UNSUPPORTED_MEDIA_TYPE")
    elif binary:
        event = _binary_cloudevent(scope, body)
    else:
        event = _plain(scope, body)
    if not isinstance(event.data, DataArrived):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"this webhook accepts only {DataArrived.event_type} events, "
                                                f"got {event.type}", "WRONG_EVENT_TYPE")
    return event


def _plain(scope: Scope, body: bytes) -> Event:
    try:
        payload = DataArrived.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"invalid request: {exc}", "BAD_REQUEST") from None
    key = header(scope, b"idempotency-key")
    return new_event(payload, id=key or None, source=SOURCE)


def _cloudevent(raw: bytes) -> Event:
    try:
        return parse(raw)
    except EventError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"invalid CloudEvent: {exc.reason}", "BAD_CLOUDEVENT") from None


def _binary_cloudevent(scope: Scope, body: bytes) -> Event:
    attributes = {name: value for name in _BINARY_ATTRIBUTES if (value := header(scope, f"ce-{name}".encode()))}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"invalid CloudEvent: the body is not JSON: {exc}",
                        "BAD_CLOUDEVENT") from None
    return _cloudevent(json.dumps({**attributes, "data": data}).encode())


class WebhookServer:
    """`WebhookApp` on uvicorn, bound when built: `serve_forever()` (stops on SIGTERM/SIGINT or `shutdown()`)."""

    def __init__(self, bus: Bus, topic: str, token: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = WebhookApp(bus, topic, token)
        self._http = AppServer(self.app, host=host, port=port, name="webhook")

    @property
    def bus(self) -> Bus:
        return self.app.bus

    @property
    def url(self) -> str:
        return self._http.url + PATH

    def start(self) -> None:
        """Serve from a background thread; returns once it accepts connections."""
        self._http.start()

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and wait for it (from another thread than the serving one)."""
        self._http.stop()

    def shutdown_soon(self) -> None:
        """Ask the server to stop without waiting (safe from a signal handler)."""
        self._http.request_stop()

    def server_close(self) -> None:
        self._http.close()
        self.app.close()

"""The manual-trigger webhook, locally: POST /retrain with a bearer token publishes a data arrival.

The cluster's counterpart is the `ctloop-webhook` EventSource (same path, same token from a secret).
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer

from pydantic import ValidationError

from ctloop.bus import Bus
from ctloop.events import DataArrived, new_event, to_bytes

PATH = "/retrain"
TOKEN_ENV = "CTLOOP_WEBHOOK_TOKEN"
MAX_BODY = 65536


def token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


class WebhookServer(HTTPServer):
    """Single-threaded on purpose: one request publishes at a time, so any bus is safe to use."""

    def __init__(self, bus: Bus, topic: str, token: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not token:
            raise ValueError("the webhook needs a non-empty bearer token")
        self.bus = bus
        self.topic = topic
        self.token = token
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    def shutdown_soon(self) -> None:
        threading.Thread(target=self.shutdown, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the sensor's logs carry what matters."""

    def _reply(self, status: HTTPStatus, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != PATH:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}; use {PATH}"})
            return
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong bearer token"},
                        {"WWW-Authenticate": "Bearer"})
            return
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            # A negative length would read until the client closes, stalling this one-request-at-a-time server.
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"Content-Length must be a byte count, got {declared!r}"})
            return
        length = int(declared)
        if length > MAX_BODY:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            payload = DataArrived.model_validate(body)
        except (ValueError, ValidationError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"invalid request: {exc}"})
            return
        event_id = self.headers.get("Idempotency-Key") or str(uuid.uuid4())
        event = new_event(payload, id=event_id, source="urn:ctloop:webhook")
        self.server.bus.publish(self.server.topic, to_bytes(event), key=payload.model)
        self.server.bus.flush()
        self._reply(HTTPStatus.ACCEPTED, {"id": event.id})

"""The HTTP edge shared by serving and the webhook event source: an ASGI app on uvicorn, and its helpers.

`AppServer` binds its socket when it is built (so `url` is known, port 0 included, before anything is
served), then serves from a background thread (`start`) or the caller's (`serve_forever`, which stops
cleanly on SIGINT/SIGTERM). The helpers read a request body under a byte limit and a time limit and
answer JSON, so every refusal carries its reason.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """A request refused before it reached the app's logic; `kind` labels it in metrics."""

    def __init__(self, status: HTTPStatus, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class ClientGone(Exception):
    """The client disconnected before its body arrived; there is no one to answer."""


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, *, limit: int, timeout_s: float) -> bytes:
    """The whole body, or `HttpError`: 400 for a bad Content-Length, 413 over `limit`, 408 when too slow."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"Content-Length must be a byte count, got {declared!r}",
                            "BAD_CONTENT_LENGTH")
        if int(declared) > limit:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body of {declared} bytes exceeds the limit of {limit}", "BODY_TOO_LARGE")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    # A chunked body has no Content-Length to refuse up front.
                    raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                    f"body exceeds the limit of {limit} bytes", "BODY_TOO_LARGE")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, f"body not received within {timeout_s:g} s",
                        "BODY_TIMEOUT") from None


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_body(send, status, json.dumps(body).encode(), headers)


async def send_body(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send JSON already encoded (so the encoding can happen off the event loop)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def send_text(send: Send, status: int, text: str, content_type: bytes) -> None:
    data = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def error_body(message: str, kind: str) -> dict[str, str]:
    """An error reply: `error` is the reason for people, `error_code` the kind for programs (as MLflow names it)."""
    return {"error": message, "error_code": kind}


class AppServer:
    """One ASGI app on uvicorn, bound at construction; `start()`/`stop()` or `serve_forever()`."""

    def __init__(self, app: App, *, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        import uvicorn

        self.name = name
        self._socket = socket.create_server((host, port), backlog=1024)
        self._socket.setblocking(False)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, server_header=False, date_header=False,
            http=_explaining_protocol(), loop=_loop(), timeout_keep_alive=30, timeout_graceful_shutdown=10,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._running = False
        self._done = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Serve from a background thread; returns once it accepts connections."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start serving on {self.url}")
            time.sleep(0.01)

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (in the main thread) or `stop()` from another thread."""
        if threading.current_thread() is not threading.main_thread():
            self._run()
            return
        # uvicorn shuts down gracefully on the signal, then raises it again for the handler it found;
        # a no-op handler turns that into a plain return, so the caller's cleanup (flushing logs) runs.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> None:
        self._running = True
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._done.set()

    def request_stop(self) -> None:
        """Ask the server to finish its requests and stop, without waiting (safe in a signal handler)."""
        self._server.should_exit = True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop serving (from any thread but the serving one) and release the socket."""
        self.request_stop()
        if self._running:
            self._done.wait(timeout_s)
        self.close()

    def close(self) -> None:
        """Release the socket (also when it never served)."""
        self._socket.close()


def _explaining_protocol() -> type:
    """uvicorn's httptools protocol, answering a request it cannot parse (a Content-Length of -1, a bad
    header) with JSON that says what the parser found, instead of a bare "Invalid HTTP request received."."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ExplainingHttpTools(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            # Called from the `except HttpParserError` block: the exception in flight is the reason.
            error = sys.exc_info()[1]
            body = json.dumps(error_body(f"invalid HTTP request: {error}" if error else msg, "BAD_HTTP")).encode()
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return ExplainingHttpTools


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"

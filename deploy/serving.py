"""Serving `models:/NAME@champion` over HTTP, following the alias without downtime.

- `ChampionFollower` polls the alias (and wakes early on promoted/rolled-back events); it loads a new
  version completely before swapping one reference, so a request that already took the old model
  finishes on it and no request sees a half-loaded one.
- `PredictionLog` publishes every served batch to the predictions topic from a background thread,
  off the request path; when its queue is full it drops and counts instead of stalling requests.
- `PredictionServer` is a stdlib `ThreadingHTTPServer`: `POST /predict`, `GET /health`.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ctloop.bus import Bus
from ctloop.deploy.registry import CHAMPION, Registry, RegistryError
from ctloop.events import EventError, ModelPromoted, ModelRolledBack, parse
from ctloop.predictions import PredictionBatch

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_ROWS = 10_000


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: Any
    features: tuple[str, ...] | None
    required: frozenset[str]
    float_columns: frozenset[str] = frozenset()


def load_version(tracking_uri: str, name: str, version: str, cache_dir: Path) -> LoadedModel:
    """Download and load one registered version; the signature, when present, names the features."""
    import mlflow.artifacts
    import mlflow.pyfunc

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(cache_dir / f"v{version}-{uuid.uuid4().hex[:6]}"),
        tracking_uri=tracking_uri, registry_uri=tracking_uri,
    )
    model = mlflow.pyfunc.load_model(local)
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return LoadedModel(version, model, None, frozenset())
    floats = frozenset(
        c.name for c in schema.inputs if getattr(getattr(c, "type", None), "name", None) in ("double", "float")
    )
    return LoadedModel(version, model, tuple(schema.input_names()), frozenset(schema.required_input_names()), floats)


class ChampionFollower:
    """Holds the served model and replaces it when the champion alias moves."""

    def __init__(
        self, registry: Registry, name: str, *, poll_s: float = 2.0,
        loader: Callable[[str, str, str, Path], LoadedModel] = load_version,
    ) -> None:
        self.registry = registry
        self.name = name
        self.poll_s = poll_s
        self._loader = loader
        self._cache = tempfile.TemporaryDirectory(prefix="ctloop-serve-")
        self._current: LoadedModel | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def refresh(self) -> bool:
        """Load the champion if it is not the one served; True when the served model changed."""
        version = self.registry.alias(self.name, CHAMPION)
        if version is None or (self._current is not None and self._current.version == version):
            return False
        loaded = self._loader(self.registry.tracking_uri, self.name, version, Path(self._cache.name))
        self._current = loaded
        log.info("serving %s version %s", self.name, version)
        return True

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:
                # Keep serving the model we have; the registry or a bad version may recover.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not follow %s@champion: %s", self.name, self.last_error)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._cache.cleanup()


class EventWatcher:
    """Wakes the follower when a promoted/rolled-back event for its model arrives on the models topic."""

    def __init__(self, bus: Bus, topic: str, follower: ChampionFollower) -> None:
        # A group of its own: every serving replica must see every event.
        self._consumer = bus.consumer([topic], group=f"ctloop-serve-{follower.name}-{uuid.uuid4().hex[:8]}")
        self._follower = follower
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"events-{follower.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.poll(timeout_s=0.5)
            except Exception:
                log.exception("models topic poll failed; the alias poll still follows the champion")
                self._stop.wait(self._follower.poll_s)
                continue
            for message in messages:
                try:
                    event = parse(message.value)
                except EventError as exc:
                    # Not dead-lettered here: every replica reads in a group of its own, so each would copy
                    # it. The event only wakes the follower early; the alias poll still follows the champion.
                    log.warning("ignoring a bad message on %s at offset %d: %s", message.topic, message.offset,
                                exc.reason)
                    continue
                if isinstance(event.data, ModelPromoted | ModelRolledBack) and event.data.model == self._follower.name:
                    self._follower.wake()
            if messages:
                self._consumer.commit(messages[-1])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


class PredictionLog:
    """Publishes prediction batches from a background thread so logging adds no request latency."""

    def __init__(self, bus: Bus, topic: str, *, max_pending: int = 10_000) -> None:
        self.bus = bus
        self.topic = topic
        self.published = 0
        self.dropped = 0
        self._queue: queue.Queue[PredictionBatch | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, batch: PredictionBatch) -> None:
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += 1
            log.warning("prediction log queue full: dropped a batch of %d rows (%d dropped)", len(batch.rows),
                        self.dropped)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                break
            try:
                self.bus.publish(self.topic, batch.to_bytes(), key=batch.model)
                self.published += 1
            except Exception:
                self.dropped += 1
                log.exception("could not publish a prediction batch of %s", batch.model)
            if self._queue.empty():
                self._flush()

    def _flush(self) -> None:
        try:
            self.bus.flush()
        except Exception:
            log.exception("prediction log flush failed")

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)
        self._flush()


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


_SCALARS = (str, int, float, bool, type(None))


def parse_rows(body: bytes, loaded: LoadedModel, *, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """The rows of a predict request, or `BadRequest` naming what is wrong."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body must be a JSON object, got {type(doc).__name__}")
    if "rows" not in doc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "missing field 'rows'")
    unknown_fields = sorted(set(doc) - {"rows"})
    if unknown_fields:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown fields {unknown_fields}; expected only 'rows'")
    rows = doc["rows"]
    if not isinstance(rows, list) or not rows:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'rows' must be a non-empty list of objects")
    if len(rows) > max_rows:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{len(rows)} rows exceed the limit of {max_rows}")
    known = set(loaded.features) if loaded.features is not None else None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} must be an object, got {type(row).__name__}")
        for key, value in row.items():
            if not isinstance(value, _SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} feature {key!r} must be a finite scalar")
        if known is not None:
            missing = sorted(loaded.required - row.keys())
            if missing:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} is missing features {missing}")
            extra = sorted(row.keys() - known)
            if extra:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"row {i} has unknown features {extra}")
    return rows


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value)


class PredictionServer:
    """The HTTP front of a follower; `start()` serves from a background thread, `serve_forever()` blocks."""

    def __init__(
        self, follower: ChampionFollower, prediction_log: PredictionLog | None = None, *,
        host: str = "127.0.0.1", port: int = 0, max_rows: int = MAX_ROWS,
    ) -> None:
        self.follower = follower
        self.prediction_log = prediction_log
        self.max_rows = max_rows
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def predict(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        # One read of the reference: this request finishes on this model whatever is swapped in meanwhile.
        loaded = self.follower.current
        name = self.follower.name
        if loaded is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"no champion loaded for model {name!r} yet"}
        rows = parse_rows(body, loaded, max_rows=self.max_rows)
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(loaded.features) if loaded.features else None)
        for column in loaded.float_columns:
            # JSON has one number type: 1 for a double feature is 1.0, which MLflow will not cast itself.
            if frame[column].dtype.kind in "iu":
                frame[column] = frame[column].astype("float64")
        try:
            predictions = _jsonable(loaded.model.predict(frame))
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE":
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"rows do not match the model's schema: {exc}") from None
            raise
        if self.prediction_log is not None:
            self.prediction_log.submit(PredictionBatch(model=name, version=loaded.version, rows=rows,
                                                       predictions=predictions))
        return HTTPStatus.OK, {"predictions": predictions, "model": name, "version": loaded.version}

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        loaded = self.follower.current
        body: dict[str, Any] = {
            "model": self.follower.name, "version": loaded.version if loaded else None, "ready": loaded is not None,
            "follow_error": self.follower.last_error,
        }
        if self.prediction_log is not None:
            body |= {"published_batches": self.prediction_log.published, "dropped_batches": self.prediction_log.dropped}
        return (HTTPStatus.OK if loaded else HTTPStatus.SERVICE_UNAVAILABLE), body

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="prediction-server", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _handler(server: PredictionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
        # Headers and body go out in separate writes; with Nagle on, each response waits ~40 ms for an ACK.
        disable_nagle_algorithm = True

        def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(*server.health())
            elif self.path == "/predict":
                self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST for /predict"})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path!r}; use /predict or /health"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path!r}; use POST /predict"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "a Content-Length header is required"})
                return
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}"})
                return
            body = self.rfile.read(length)
            try:
                self._send(*server.predict(body))
            except BadRequest as exc:
                self._send(exc.status, {"error": str(exc)})
            except Exception as exc:
                log.exception("prediction failed")
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"prediction failed: {type(exc).__name__}"})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


@contextmanager
def serving(
    tracking_uri: str, name: str, *, host: str = "127.0.0.1", port: int = 0, poll_s: float = 2.0,
    bus: Bus | None = None, predictions_topic: str | None = None, models_topic: str | None = None,
) -> Iterator[PredictionServer]:
    """The follower, prediction log and event watcher running, and the HTTP server bound but not yet
    serving (`start()` or `serve_forever()` it); everything stopped and closed on exit."""
    follower = ChampionFollower(Registry(tracking_uri), name, poll_s=poll_s)
    try:
        follower.refresh()
    except RegistryError as exc:
        log.warning("registry not reachable at start (%s); serving 503 until it is", exc)
    with ExitStack() as stack:
        follower.start()
        stack.callback(follower.stop)
        prediction_log = PredictionLog(bus, predictions_topic) if bus is not None and predictions_topic else None
        if prediction_log is not None:
            stack.callback(prediction_log.close)
        if bus is not None and models_topic:
            watcher = EventWatcher(bus, models_topic, follower)
            watcher.start()
            stack.callback(watcher.stop)
        server = PredictionServer(follower, prediction_log, host=host, port=port)
        stack.callback(server.httpd.server_close)
        yield server


def serve(
    tracking_uri: str, name: str, *, host: str = "127.0.0.1", port: int = 8080, poll_s: float = 2.0,
    bus: Bus | None = None, predictions_topic: str | None = None, models_topic: str | None = None,
) -> None:
    """Run until interrupted: follow the champion, serve HTTP, log predictions and watch events."""
    with serving(tracking_uri, name, host=host, port=port, poll_s=poll_s, bus=bus,
                 predictions_topic=predictions_topic, models_topic=models_topic) as server:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a pod stopping) ends serve_forever; shutdown() must come from another thread.
            signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
        log.info("serving models:/%s@champion on %s", name, server.url)
        with suppress(KeyboardInterrupt):
            server.serve_forever()

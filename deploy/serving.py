"""Serving `models:/NAME@champion` over HTTP with MLflow's scoring protocol, following the alias without downtime.

- `ChampionFollower` polls the alias (and wakes early on promoted/rolled-back events); it loads a new
  version completely before swapping one reference, so a request that already took the old model
  finishes on it and no request sees a half-loaded one.
- `PredictionLog` publishes every served batch to the predictions topic from a background thread,
  off the request path (on the embedded bus, in group commits); when its queue is full it drops and
  counts instead of stalling requests.
- `ScoringApp` is the ASGI app (on uvicorn, through `PredictionServer`): `POST /invocations` as
  `mlflow models serve` speaks it (`POST /predict` is the same endpoint under ctloop's older name),
  `GET /ping`, `/health`, `/version` and Prometheus `/metrics`. Each served row gets an id, returned
  in `ids` and logged with the batch, which later labels can name.

Bodies are read asynchronously (a slow or stalled client costs nothing) and scored on a few worker
threads. A batch is on its way to the prediction log before its response is sent, so a client that
waits for each answer finds its batches logged in the order it was answered; batches of concurrent
requests are logged in the order they finished. For more throughput, run more replicas (each follows
the alias and logs on its own).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ctloop.bus import Bus
from ctloop.deploy.promotion import settle_quietly
from ctloop.deploy.registry import CHAMPION, Registry, RegistryError
from ctloop.deploy.scoring import MAX_ROWS, BadRequest, Features, ScoringRequest, parse_request
from ctloop.events import EventError, ModelPromoted, ModelRolledBack, parse
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
    send_body,
    send_json,
    send_text,
)
from ctloop.predictions import PredictionBatch

if TYPE_CHECKING:
    from ctloop.deploy.shadow import Shadow

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
LOG_LINGER_S = 0.02  # how long a group of prediction batches waits for more before its one commit
LOG_MAX_GROUP = 64  # bounds how long one group holds the bus file's write lock (other processes write there too)
BODY_TIMEOUT_S = 30.0
WORKERS = 4

NO_SIGNATURE = Features(None)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version. `prechecked`, when set, is the same pyfunc without its input signature: for a
    frame already in the signature's exact form (every feature a finite float64, in order) MLflow's schema
    enforcement returns the frame unchanged, so it is skipped instead of done a second time."""

    version: str
    model: Any
    features: Features = NO_SIGNATURE
    float_columns: frozenset[str] = frozenset()
    prechecked: Any = None


def load_version(tracking_uri: str, name: str, version: str, cache_dir: Path) -> LoadedModel:
    """Download and load one registered version; the signature, when present, names the features."""
    import mlflow.artifacts
    import mlflow.pyfunc
    from mlflow import MlflowClient

    # Resolved here, not as models:/NAME/VERSION: MLflow resolves those with the process's global registry URI
    # whatever `registry_uri` says, so a `ctloop serve` told its registry only by ctloop's settings looked in
    # ./mlflow.db.
    source = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_download_uri(name, version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(cache_dir / f"v{version}-{uuid.uuid4().hex[:6]}"),
        tracking_uri=tracking_uri, registry_uri=tracking_uri,
    )
    return loaded_model(version, mlflow.pyfunc.load_model(local))


def loaded_model(version: str, model: Any) -> LoadedModel:
    """A loaded pyfunc and what its signature says about the input."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return LoadedModel(version, model)
    floats = frozenset(
        c.name for c in schema.inputs if getattr(getattr(c, "type", None), "name", None) in ("double", "float")
    )
    names = tuple(schema.input_names())
    prechecked = _without_signature(model) if _all_doubles(model) else None
    features = Features(names, frozenset(schema.required_input_names()), matrix=prechecked is not None)
    return LoadedModel(version, model, features, floats, prechecked)


def _all_doubles(model: Any) -> bool:
    """Whether every input is a required double column and nothing else in MLflow's `predict` depends on
    the signature (no params schema, whose defaults it would fill in; no signature from type hints)."""
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec

    meta = model.metadata
    schema = meta.get_input_schema()
    return (
        not schema.is_tensor_spec() and all(
            isinstance(c, ColSpec) and c.type == DataType.double and c.required for c in schema.inputs
        ) and meta.get_params_schema() is None and not meta._is_signature_from_type_hint()
        and not meta._is_type_hint_from_example()
    )


def _without_signature(model: Any) -> Any:
    """The pyfunc with its metadata's signature removed: MLflow's own `predict` (prediction context, the
    implementation's `predict`) minus schema enforcement."""
    meta = copy.copy(model.metadata)
    meta.signature = None
    unsigned = copy.copy(model)
    unsigned._model_meta = meta
    return unsigned


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


@runtime_checkable
class GroupPublisher(Protocol):
    """A bus that can append many messages to a topic in one durable commit (`EmbeddedBus`)."""

    def publish_many(self, topic: str, messages: Sequence[tuple[bytes, str | bytes | None]]) -> None: ...


class PredictionLog:
    """Publishes prediction batches from a background thread so logging adds no request latency: a batch
    can be handed over unbuilt (`submit_later`), so even its rows are made and encoded off the request path.

    On a bus that commits each publish durably (the embedded SQLite bus) the log commits in groups: the
    first batch opens a group, the batches that arrive within `linger_s` join it, and the whole group is
    one transaction with one fsync, in the order served. That moves no guarantee: a batch was never
    durable when its answer left (it waits in memory for the log's thread), and a SIGKILL or power loss
    still loses at most what was queued or lingering, now up to `linger_s` more of it; what was committed
    survives both. On Kafka the producer groups by itself (its `linger.ms`), so each batch is published as
    it comes."""

    def __init__(self, bus: Bus, topic: str, *, max_pending: int = 10_000, linger_s: float = LOG_LINGER_S,
                 max_group: int = LOG_MAX_GROUP) -> None:
        self.bus = bus
        self.topic = topic
        self.linger_s = linger_s
        self.max_group = max_group
        self.published = 0
        self.dropped = 0
        self.commits = 0
        self._queue: queue.Queue[Callable[[], PredictionBatch] | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, batch: PredictionBatch) -> None:
        self.submit_later(lambda: batch, batch.count)

    def submit_later(self, build: Callable[[], PredictionBatch], rows: int) -> None:
        """Queue the batch `build()` returns, built on the log's thread; `rows` is its size, for the warning."""
        try:
            self._queue.put_nowait(build)
        except queue.Full:
            self.dropped += 1
            log.warning("prediction log queue full: dropped a batch of %d rows (%d dropped)", rows, self.dropped)

    def _run(self) -> None:
        grouped = self.bus if isinstance(self.bus, GroupPublisher) else None
        while (build := self._queue.get()) is not None:
            if grouped is None:
                self._publish_one(build)
                if self._queue.empty():
                    self._flush()
            elif not self._commit_group(grouped, build):
                break

    def _commit_group(self, bus: GroupPublisher, first: Callable[[], PredictionBatch]) -> bool:
        """Commit `first` and what arrives within the linger as one transaction; False once told to stop."""
        group: list[tuple[bytes, str | bytes | None]] = []
        self._add(group, first)
        deadline = time.monotonic() + self.linger_s
        going = True
        while len(group) < self.max_group:
            try:
                build = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if build is None:
                going = False
                break
            # Built as it arrives: short holds of the GIL between requests rather than one long one.
            self._add(group, build)
        if group:
            try:
                bus.publish_many(self.topic, group)
            except Exception:
                self.dropped += len(group)
                log.exception("could not publish %d prediction batches", len(group))
            else:
                self.published += len(group)
                self.commits += 1
        return going

    def _add(self, group: list[tuple[bytes, str | bytes | None]], build: Callable[[], PredictionBatch]) -> None:
        try:
            batch = build()
            group.append((batch.to_bytes(), batch.model))
        except Exception:
            self.dropped += 1
            log.exception("could not build a prediction batch")

    def _publish_one(self, build: Callable[[], PredictionBatch]) -> None:
        try:
            batch = build()
            self.bus.publish(self.topic, batch.to_bytes(), key=batch.model)
            self.published += 1
        except Exception:
            self.dropped += 1
            log.exception("could not publish a prediction batch")

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


ROUTES = {"/invocations": "POST", "/predict": "POST", "/ping": "GET", "/health": "GET", "/version": "GET",
          "/metrics": "GET"}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """Prometheus metrics of one server, in a registry of its own (tests run several servers in a process)."""

    def __init__(self, follower: ChampionFollower, prediction_log: PredictionLog | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("ctloop_serving_requests", "HTTP requests answered, by path and status code",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("ctloop_serving_request_seconds", "Seconds from request to reply, by path",
                                 ["path"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("ctloop_serving_errors", "Refused or failed requests, by kind (the reply's error_code)",
                              ["kind"], registry=self.registry)
        self.rows = Counter("ctloop_serving_rows", "Rows scored", registry=self.registry)
        self.registry.register(_StateCollector(follower, prediction_log))

    def observe(self, path: str, status: int, seconds: float, kind: str | None) -> None:
        label = path if path in ROUTES else "other"  # a path per fuzzed URL would grow the registry without end
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)
        if kind is not None:
            self.errors.labels(kind).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _StateCollector:
    """The served version and the prediction log's counts, read when scraped."""

    def __init__(self, follower: ChampionFollower, prediction_log: PredictionLog | None) -> None:
        self.follower = follower
        self.prediction_log = prediction_log

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        loaded = self.follower.current
        ready = GaugeMetricFamily("ctloop_serving_ready", "1 once a champion is loaded", labels=["model"])
        ready.add_metric([self.follower.name], 1.0 if loaded else 0.0)
        yield ready
        version = GaugeMetricFamily("ctloop_serving_model_version", "Registered version that answers requests",
                                    labels=["model"])
        if loaded is not None and loaded.version.isdigit():
            version.add_metric([self.follower.name], float(loaded.version))
        yield version
        if self.prediction_log is not None:
            yield CounterMetricFamily("ctloop_serving_prediction_batches_published", "Batches on the predictions topic",
                                      value=self.prediction_log.published)
            yield CounterMetricFamily("ctloop_serving_prediction_batches_dropped",
                                      "Batches not logged (queue full or bus error)", value=self.prediction_log.dropped)


class ScoringApp:
    """The ASGI app: MLflow's scoring protocol over the follower's current model, plus health and metrics."""

    def __init__(
        self, follower: ChampionFollower, prediction_log: PredictionLog | None = None, *, max_rows: int = MAX_ROWS,
        max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S, workers: int = WORKERS,
    ) -> None:
        self.follower = follower
        self.prediction_log = prediction_log
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = ServingMetrics(follower, prediction_log)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score")
        self.shadow: Shadow | None = None  # set by `serving(..., shadow=ALIAS)`
        self._open = 0  # requests between arrival and answer; touched only on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        kind: str | None = None
        self._open += 1
        try:
            status = await self._answer(path, method, scope, receive, send)
        except HttpError as exc:
            status, kind = exc.status, exc.kind
            allow = [(b"allow", ROUTES[path].encode())] if status == HTTPStatus.METHOD_NOT_ALLOWED else None
            await send_json(send, status, error_body(str(exc), kind), allow)
        except ClientGone:
            status, kind = 499, "CLIENT_GONE"  # nginx's code for it: nobody is left to answer
        except Exception as exc:
            log.exception("prediction failed")
            status, kind = HTTPStatus.INTERNAL_SERVER_ERROR, "PREDICT_FAILED"
            await send_json(send, status, error_body(f"prediction failed: {type(exc).__name__}", kind))
        finally:
            self._open -= 1
        self.metrics.observe(path, status, time.perf_counter() - started, kind)

    async def _answer(self, path: str, method: str, scope: Scope, receive: Receive, send: Send) -> int:
        allowed = ROUTES.get(path)
        if allowed is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such path {path!r}; use POST /invocations (or /predict), "
                                                  "GET /ping, /health, /version or /metrics", "NOT_FOUND")
        if method != allowed:
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allowed} for {path}", "METHOD_NOT_ALLOWED")
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            await send_text(send, HTTPStatus.OK, self.metrics.exposition().decode(), CONTENT_TYPE_LATEST.encode())
            return HTTPStatus.OK
        if method == "GET":
            status, body = self.version() if path == "/version" else self.health()
        else:
            _check_content_type(scope)
            request = await read_body(scope, receive, limit=self.max_body_bytes, timeout_s=self.body_timeout_s)
            await send_body(send, HTTPStatus.OK, await self._score_somewhere(request))
            return HTTPStatus.OK
        await send_json(send, status, body)
        return status

    async def _score_somewhere(self, request: bytes) -> bytes:
        """The only open request is scored right here, saving two thread switches; with others open, on a
        worker thread: the model's native code (numpy, pandas, torch) releases the GIL, so concurrent
        requests use more than one core, and the loop keeps reading the next ones meanwhile."""
        if self._open == 1:
            return self._score_encoded(request)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._score_encoded, request)

    def _score_encoded(self, body: bytes) -> bytes:
        return json.dumps(self.score(body)[1]).encode()

    def score(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """Score one request body on the current model and log the batch; `HttpError` when it cannot."""
        # One read of the reference: this request finishes on this model whatever is swapped in meanwhile.
        loaded = self.follower.current
        name = self.follower.name
        if loaded is None:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"no champion loaded for model {name!r} yet",
                            "NO_CHAMPION")
        request = parse_request(body, loaded.features, max_rows=self.max_rows)
        predictions = _predict(loaded, request)
        if len(predictions) != request.count:
            raise RuntimeError(f"the model returned {len(predictions)} predictions for {request.count} rows")
        batch_id = uuid.uuid4().hex
        ids = [f"{batch_id}-{i}" for i in range(request.count)]
        self.metrics.rows.inc(request.count)
        if self.prediction_log is not None:
            self.prediction_log.submit_later(
                partial(served_batch, name, loaded.version, request, predictions, ids, datetime.now(UTC)),
                request.count)
        if self.shadow is not None:
            self.shadow.submit(request, ids, loaded.version)
        return HTTPStatus.OK, {"predictions": predictions, "ids": ids, "model": name, "version": loaded.version}

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        loaded = self.follower.current
        body: dict[str, Any] = {
            "model": self.follower.name, "version": loaded.version if loaded else None, "ready": loaded is not None,
            "follow_error": self.follower.last_error,
        }
        if self.prediction_log is not None:
            body |= {"published_batches": self.prediction_log.published, "dropped_batches": self.prediction_log.dropped}
        return (HTTPStatus.OK if loaded else HTTPStatus.SERVICE_UNAVAILABLE), body

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def version(self) -> tuple[HTTPStatus, dict[str, Any]]:
        import mlflow

        loaded = self.follower.current
        body = {"model": self.follower.name, "version": loaded.version if loaded else None,
                "mlflow_version": mlflow.__version__}
        return (HTTPStatus.OK if loaded else HTTPStatus.SERVICE_UNAVAILABLE), body


def served_batch(name: str, version: str, request: ScoringRequest, predictions: list[Any], ids: list[str],
                 served: datetime, role: str = "champion") -> PredictionBatch:
    """The prediction-log batch of one scored request: columnar (the request's own columns and lists, no
    dict per row) unless its rows' features differ. Built without validating again: the rows passed the
    request's checks, with one prediction and id per row."""
    split = request.split()
    if split is None:
        return PredictionBatch.model_construct(model=name, version=version, rows=request.rows,
                                               predictions=predictions, ids=ids, ts=served, role=role)
    columns, data = split
    return PredictionBatch.model_construct(model=name, version=version, columns=columns, data=data,
                                           predictions=predictions, ids=ids, ts=served, role=role)


def _check_content_type(scope: Scope) -> None:
    given = header(scope, b"content-type")
    if given is None:
        return
    mime, _, parameters = given.partition(";")
    charset = parameters.strip().lower().removeprefix("charset=") if parameters.strip() else "utf-8"
    if mime.strip().lower() != "application/json" or charset.strip('"') != "utf-8":
        raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Type must be application/json (UTF-8), got {given!r}", "UNSUPPORTED_MEDIA_TYPE")


def _predict(loaded: LoadedModel, request: ScoringRequest) -> list[Any]:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    names = loaded.features.names
    if request.matrix is not None and loaded.prechecked is not None:
        # Already what MLflow's enforcement would return (tests/deploy/test_serving_fast_path.py holds it to that).
        return _jsonable(loaded.prechecked.predict(pd.DataFrame(request.matrix, columns=names, copy=False)))
    frame = pd.DataFrame(request.rows, columns=list(names) if names is not None else None)
    # JSON has one number type: 1 for a double feature is 1.0, which MLflow will not cast itself.
    ints = [c for c, dtype in frame.dtypes.items() if dtype.kind in "iu" and c in loaded.float_columns]
    if ints:
        frame[ints] = frame[ints].astype("float64")
    try:
        raw = (loaded.model.predict(frame, params=request.params) if request.params is not None
               else loaded.model.predict(frame))
    except MlflowException as exc:
        if exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"the request does not match the model's signature: {exc.message[:1000]}") from None
    return _jsonable(raw)


def _jsonable(value: Any) -> list[Any]:
    if hasattr(value, "to_json") and hasattr(value, "columns"):
        return json.loads(value.to_json(orient="records"))  # numpy scalars inside records become plain JSON
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value)


class PredictionServer:
    """`ScoringApp` on uvicorn: bound when built; `start()` serves from a thread, `serve_forever()` blocks."""

    def __init__(
        self, follower: ChampionFollower, prediction_log: PredictionLog | None = None, *,
        host: str = "127.0.0.1", port: int = 0, max_rows: int = MAX_ROWS, max_body_bytes: int = MAX_BODY_BYTES,
        body_timeout_s: float = BODY_TIMEOUT_S, workers: int = WORKERS,
    ) -> None:
        self.app = ScoringApp(follower, prediction_log, max_rows=max_rows, max_body_bytes=max_body_bytes,
                              body_timeout_s=body_timeout_s, workers=workers)
        self._http = AppServer(self.app, host=host, port=port, name="prediction-server")

    @property
    def follower(self) -> ChampionFollower:
        return self.app.follower

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> None:
        self._http.start()

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def stop(self) -> None:
        self._http.stop()
        self.app.close()

    def close(self) -> None:
        self._http.close()
        self.app.close()


@contextmanager
def serving(
    tracking_uri: str, name: str, *, host: str = "127.0.0.1", port: int = 0, poll_s: float = 2.0,
    bus: Bus | None = None, predictions_topic: str | None = None, models_topic: str | None = None,
    shadow: str | None = None,
) -> Iterator[PredictionServer]:
    """The follower, prediction log and event watcher running, and the HTTP server bound but not yet
    serving (`start()` or `serve_forever()` it); everything stopped and closed on exit. `shadow` names a
    second alias scored beside the champion and logged, never returned (`ctloop.deploy.shadow`)."""
    follower = ChampionFollower(Registry(tracking_uri), name, poll_s=poll_s)
    try:
        follower.refresh()
    except RegistryError as exc:
        log.warning("registry not reachable at start (%s); serving 503 until it is", exc)
    with ExitStack() as stack:
        follower.start()
        stack.callback(follower.stop)
        if bus is not None:
            # A move whose process died before announcing it is announced now, off the start-up path.
            settling = threading.Thread(target=settle_quietly, args=(follower.registry, name), kwargs={"bus": bus},
                                        name=f"settle-{name}", daemon=True)
            settling.start()
            stack.callback(settling.join, 30)
        prediction_log = PredictionLog(bus, predictions_topic) if bus is not None and predictions_topic else None
        if prediction_log is not None:
            stack.callback(prediction_log.close)
        if bus is not None and models_topic:
            watcher = EventWatcher(bus, models_topic, follower)
            watcher.start()
            stack.callback(watcher.stop)
        server = PredictionServer(follower, prediction_log, host=host, port=port)
        stack.callback(server.close)
        if shadow is not None:
            from ctloop.deploy.shadow import shadowing  # it builds on this module

            server.app.shadow = stack.enter_context(shadowing(follower.registry, name, shadow, prediction_log,
                                                              poll_s=poll_s))
            server.app.metrics.registry.register(server.app.shadow)
        yield server


def serve(
    tracking_uri: str, name: str, *, host: str = "127.0.0.1", port: int = 8080, poll_s: float = 2.0,
    bus: Bus | None = None, predictions_topic: str | None = None, models_topic: str | None = None,
    shadow: str | None = None,
) -> None:
    """Run until interrupted: follow the champion, serve HTTP, log predictions and watch events."""
    with serving(tracking_uri, name, host=host, port=port, poll_s=poll_s, bus=bus,
                 predictions_topic=predictions_topic, models_topic=models_topic, shadow=shadow) as server:
        log.info("serving models:/%s@champion on %s", name, server.url)
        # SIGTERM (a pod stopping) or SIGINT ends serve_forever; the exit stack then flushes the prediction log.
        server.serve_forever()

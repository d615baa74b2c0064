"""The outcomes runtime (`ctloop outcomes run`): the joiner, landing and live quality, over one bus.

Each step joins what one poll brought (committed before anything else happens); every `evaluate_every_s`,
when new labels joined, it lands each spec's labelled rows under its `retrain_uri` and evaluates live
quality, publishing `ctloop.quality.degraded` where a spec's rule breaks. Specs are re-read from
`<home>/specs` at each evaluation, so a new or edited spec needs no restart.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ctloop.bus import Bus
from ctloop.modelspec import ModelSpec, load_specs, specs_dir
from ctloop.monitors.joiner import DEFAULT_GROUP, DEFAULT_HORIZON_S, Joiner
from ctloop.monitors.outcomes import DEFAULT_MEMORY_ROWS, OutcomeStore, default_url
from ctloop.monitors.outcomes_landing import DEFAULT_WINDOW_S, Landed, Lander
from ctloop.monitors.quality import QualityMonitor, VersionQuality, registry_holdout, registry_logger
from ctloop.settings import Settings

log = logging.getLogger(__name__)


class OutcomeMetrics:
    """Prometheus metrics of the outcomes runtime, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.quality = Gauge("ctloop_live_quality", "Live quality of a model version on labelled rows",
                             ["model", "version", "metric"], registry=r)
        self.rows = Gauge("ctloop_live_quality_rows", "Labelled rows the live quality was computed on",
                          ["model", "version"], registry=r)
        self.degraded = Counter("ctloop_quality_degraded_events", "ctloop.quality.degraded events raised",
                                ["model"], registry=r)
        self.messages = Counter("ctloop_outcomes_messages", "Messages consumed from predictions and labels",
                                registry=r)
        self.labels = Gauge("ctloop_outcomes_labels", "Labels in the store by state", ["state"], registry=r)
        self.dead_lettered = Counter("ctloop_outcomes_dead_lettered", "Messages sent to the dead-letter topic",
                                     registry=r)

    def record(self, result: VersionQuality) -> None:
        for name, value in result.live.metrics.items():
            self.quality.labels(result.model, result.version, name).set(value)
        self.rows.labels(result.model, result.version).set(result.live.n)
        if result.event_id is not None:
            self.degraded.labels(result.model).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on `port` (0 picks a free one); returns the bound port."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)

    def value(self, name: str, **labels: str) -> float:
        return float(self.registry.get_sample_value(name, labels or None) or 0.0)


@dataclass
class Evaluation:
    landed: list[Landed]
    quality: list[VersionQuality]


class OutcomesService:
    def __init__(self, settings: Settings, joiner: Joiner, lander: Lander, quality: QualityMonitor, *,
                 metrics: OutcomeMetrics, evaluate_every_s: float = 30.0, window_s: float = DEFAULT_WINDOW_S,
                 specs: Callable[[], tuple[ModelSpec, ...]]) -> None:
        self.settings = settings
        self.joiner = joiner
        self.lander = lander
        self.quality = quality
        self.metrics = metrics
        self.evaluate_every_s = evaluate_every_s
        self.window_s = window_s
        self.specs = specs
        self.on_evaluation: Callable[[Evaluation], None] | None = None
        self._next_at = time.monotonic() + evaluate_every_s
        self._evaluated_joined = -1

    @property
    def store(self) -> OutcomeStore:
        return self.joiner.store

    def step(self, timeout_s: float = 0.5) -> Evaluation | None:
        """Join one poll; evaluate when due and new rows joined since the last evaluation."""
        before = self.joiner.stats.dead_lettered
        self.metrics.messages.inc(self.joiner.step(timeout_s))
        self.metrics.dead_lettered.inc(self.joiner.stats.dead_lettered - before)
        if time.monotonic() < self._next_at:
            return None
        self._next_at = time.monotonic() + self.evaluate_every_s
        return self.evaluate()

    def evaluate(self, now: datetime | None = None) -> Evaluation | None:
        """Land and judge every spec now, unless nothing joined since the last time."""
        joined = self.store.joined_count()
        if joined == self._evaluated_joined:
            return None
        now = now or datetime.now(UTC)
        result = Evaluation([], [])
        for spec in self.specs():
            landed = self.lander.land(spec, now)
            if landed is not None:
                result.landed.append(landed)
            result.quality += self.quality.evaluate(spec, now, window_s=self.window_s)
        counts = self.store.counts()
        for state in ("pending", "late", "duplicate"):
            self.metrics.labels.labels(state).set(getattr(counts, state))
        self.metrics.labels.labels("joined").set(joined)
        self._evaluated_joined = joined
        if self.on_evaluation is not None:
            self.on_evaluation(result)
        return result

    def run(self, should_stop: Callable[[], bool], poll_timeout_s: float = 0.5) -> None:
        while not should_stop():
            self.step(poll_timeout_s)

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self.run(lambda: time.monotonic() >= deadline)

    def close(self) -> None:
        self.joiner.close()
        self.store.close()


def outcomes_service(settings: Settings, bus: Bus, *, store_url: str | None = None,
                     horizon_s: float = DEFAULT_HORIZON_S, evaluate_every_s: float = 30.0,
                     window_s: float = DEFAULT_WINDOW_S, land_rows: int | None = None,
                     group: str = DEFAULT_GROUP, metrics: OutcomeMetrics | None = None,
                     memory_rows: int = DEFAULT_MEMORY_ROWS) -> OutcomesService:
    """The joiner, lander and quality monitor as `ctloop outcomes run` wires them: the store at `store_url`
    (default: `outcomes.db` under home), specs from `<home>/specs`, holdout figures and live metrics through
    the MLflow registry at `settings.tracking_uri`; `land_rows` caps a landing at the newest rows; `memory_rows`
    bounds the store's in-memory index. The caller owns `bus`; `close()` the service."""
    store = OutcomeStore(store_url or default_url(settings.home), memory_rows=memory_rows)
    specs_cache: dict[str, ModelSpec] = {}
    read_at = [float("-inf")]

    def specs() -> tuple[ModelSpec, ...]:
        loaded = load_specs(specs_dir(settings))
        specs_cache.clear()
        specs_cache.update({s.name: s for s in loaded})
        read_at[0] = time.monotonic()
        return loaded

    def key_column(model: str) -> str | None:
        # A model without a spec is looked for again at most once a second, not once per batch.
        if model not in specs_cache and time.monotonic() - read_at[0] > 1.0:
            specs()
        spec = specs_cache.get(model)
        return spec.data.key if spec is not None else None

    metrics = metrics or OutcomeMetrics()
    joiner = Joiner(bus, settings, store, key_column=key_column, horizon_s=horizon_s, group=group)
    quality = QualityMonitor(store, bus, settings.topics.quality, holdout=registry_holdout(settings.tracking_uri),
                             sinks=(registry_logger(settings.tracking_uri), metrics.record))
    lander = Lander(store, s3_endpoint_url=settings.s3_endpoint_url, window_s=window_s, max_rows=land_rows)
    # What was built so far (libraries, specs) lives as long as the process: out of the collector's sight, a
    # poll's tens of thousands of short-lived label objects no longer make it walk that heap (a fifth of the
    # joiner's CPU with labels in batches, measured).
    gc.freeze()
    return OutcomesService(settings, joiner, lander,
                           quality, metrics=metrics, evaluate_every_s=evaluate_every_s, window_s=window_s,
                           specs=specs)

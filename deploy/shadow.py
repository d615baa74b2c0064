"""Shadow scoring: a second version scored on the champion's live requests, logged, never returned.

`ctloop serve --shadow ALIAS` (or `serving(..., shadow=ALIAS)`) follows a second alias of the model
(`challenger` before a promotion, `previous` during a bake) beside the champion. After the champion has
answered a request, `Shadow` scores the same rows on that version from a background thread and logs
them to the predictions topic with `role="shadow"` and the ids the client received, so one label later
scores both versions on the same prediction. The request never waits for it: a full queue drops the
shadow batch, and a shadow that fails, is missing or is the champion itself is counted, not raised.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ctloop.deploy.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry
from ctloop.deploy.scoring import ScoringRequest
from ctloop.deploy.serving import ChampionFollower, LoadedModel, PredictionLog, _predict, load_version, served_batch

log = logging.getLogger(__name__)

SHADOW_ALIASES = (CHALLENGER, PREVIOUS)
OUTCOMES = ("logged", "failed", "dropped", "idle")


class AliasFollower(ChampionFollower):
    """Follows `models:/NAME@ALIAS` as the champion follower follows `champion`; when the alias is removed
    (a challenger promoted, a previous rolled back to) nothing is loaded until it points somewhere again."""

    def __init__(
        self, registry: Registry, name: str, alias: str, *, poll_s: float = 2.0,
        loader: Callable[[str, str, str, Path], LoadedModel] = load_version,
    ) -> None:
        if alias == CHAMPION:
            raise ValueError("the champion answers requests; shadow another alias (challenger or previous)")
        super().__init__(registry, name, poll_s=poll_s, loader=loader)
        self.alias = alias

    def refresh(self) -> bool:
        version = self.registry.alias(self.name, self.alias)
        if version is None:
            changed, self._current = self._current is not None, None
            return changed
        if self._current is not None and self._current.version == version:
            return False
        self._current = self._loader(self.registry.tracking_uri, self.name, version, Path(self._cache.name))
        log.info("shadowing %s version %s (@%s)", self.name, version, self.alias)
        return True


@dataclass(frozen=True, slots=True)
class _Job:
    request: ScoringRequest  # as parsed for the champion; read only on the shadow's thread
    ids: list[str]
    champion_version: str
    ts: datetime


class Shadow:
    """Scores submitted requests on the followed version and logs them with role "shadow"; counts each
    submitted batch once under `OUTCOMES`: logged, failed (the shadow raised), dropped (queue full) or
    idle (no shadow version loaded, or it is the champion's)."""

    def __init__(self, follower: AliasFollower, prediction_log: PredictionLog, *, max_pending: int = 1_000) -> None:
        self.follower = follower
        self.prediction_log = prediction_log
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.rows = 0
        self.last_error: str | None = None
        self._counting = threading.Lock()  # request threads count drops while the shadow thread counts the rest
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name=f"shadow-{follower.name}", daemon=True)
        self._thread.start()

    def submit(self, request: ScoringRequest, ids: list[str], champion_version: str) -> None:
        """Queue a request the champion answered (never blocks, never raises)."""
        try:
            self._queue.put_nowait(_Job(request, ids, champion_version, datetime.now(UTC)))
        except queue.Full:
            self._count("dropped")

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            self._count(self._score(job))

    def _count(self, outcome: str) -> None:
        with self._counting:
            self.counts[outcome] += 1

    def _score(self, job: _Job) -> str:
        loaded = self.follower.current
        if loaded is None or loaded.version == job.champion_version:
            return "idle"
        try:
            predictions = _predict(loaded, job.request)
            if len(predictions) != len(job.ids):
                raise ValueError(f"{len(predictions)} predictions for {len(job.ids)} rows")
        except Exception as exc:
            if self.last_error is None:
                log.warning("shadow %s version %s failed (counted, the champion's answers are unaffected): %s",
                            self.follower.name, loaded.version, exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return "failed"
        self.last_error = None
        self.rows += len(job.ids)
        self.prediction_log.submit_later(partial(
            served_batch, self.follower.name, loaded.version, job.request, predictions, job.ids, job.ts, "shadow"),
            len(job.ids))
        return "logged"

    def close(self, timeout_s: float = 10.0) -> None:
        """Score what is queued, then stop (before the prediction log closes, so the batches reach it)."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def collect(self) -> Iterator[Any]:
        """Prometheus metrics, read when /metrics is scraped."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        batches = CounterMetricFamily("ctloop_serving_shadow_batches",
                                      "Requests given to the shadow version, by outcome", labels=["outcome"])
        for outcome, count in self.counts.items():
            batches.add_metric([outcome], count)
        yield batches
        yield CounterMetricFamily("ctloop_serving_shadow_rows", "Rows the shadow version scored and logged",
                                  value=self.rows)
        version = GaugeMetricFamily("ctloop_serving_shadow_version", "Registered version scored in shadow",
                                    labels=["model", "alias"])
        loaded = self.follower.current
        if loaded is not None and loaded.version.isdigit():
            version.add_metric([self.follower.name, self.follower.alias], float(loaded.version))
        yield version


@contextmanager
def shadowing(
    registry: Registry, name: str, alias: str, prediction_log: PredictionLog | None, *, poll_s: float = 2.0,
) -> Iterator[Shadow]:
    """A started shadow of `models:/NAME@ALIAS` logging to `prediction_log`; stopped on exit."""
    if alias not in SHADOW_ALIASES:
        raise ValueError(f"shadow alias must be one of {SHADOW_ALIASES}, got {alias!r}")
    if prediction_log is None:
        raise ValueError("a shadow's outputs only go to the prediction log: give serving a bus and predictions topic")
    follower = AliasFollower(registry, name, alias, poll_s=poll_s)
    try:
        follower.refresh()
    except Exception as exc:
        # The follower's loop keeps trying; until it loads, requests are counted idle.
        log.warning("could not load %s@%s yet: %s", name, alias, exc)
    follower.start()
    shadow = Shadow(follower, prediction_log)
    try:
        yield shadow
    finally:
        shadow.close()
        follower.stop()

"""Live quality: per model version, the promotion policy's metrics on the labelled rows of a window, logged to
MLflow against the version, exposed to Prometheus, and judged by the spec's `quality` rule.

The rule is judged on the version serving as champion most recently. A version that breaks it opens a
degraded episode and raises one `ctloop.quality.degraded` event (on `settings.topics.quality`), which the
quality sensor admits as a retrain trigger with the drift cooldown; the episode closes when the version meets
the rule again. The event is published before the episode is recorded, with an id derived from the episode,
so a crash in between republishes the same event, which the sensor takes once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ctloop.bus import Bus
from ctloop.events import QualityDegraded, new_event, to_bytes
from ctloop.modelspec import ModelSpec, QualityRule
from ctloop.monitors.live_quality import LiveQuality, live_quality
from ctloop.monitors.outcomes import CHAMPION, OutcomeStore

log = logging.getLogger(__name__)
HOLDOUT_TAG = "ctloop.metric."  # the registry's tag of a version's holdout metric (`ctloop.deploy.registry`)
LIVE_PREFIX = "live."

HoldoutLookup = Callable[[str, str, str], float | None]
"""(model, version, metric) -> the version's holdout figure, or None when unknown."""


@dataclass(frozen=True)
class Judgement:
    """A rule applied to one version's live quality; `value` is None when the rows do not give the metric."""

    degraded: bool
    value: float | None
    threshold: float | None
    rule: Literal["min", "max", "max_drop"] | None
    reason: str


def judge(rule: QualityRule, live: LiveQuality, holdout: float | None) -> Judgement:
    """Whether `live` breaks `rule`; too few rows, or a metric the rows cannot give, is never degraded."""
    value = live.metrics.get(rule.metric)
    if live.n < rule.min_rows:
        return Judgement(False, value, None, None, f"{live.n} labelled rows, fewer than min_rows {rule.min_rows}")
    if value is None:
        return Judgement(False, None, None, None, f"{rule.metric} is undefined on these {live.n} rows")
    bounds: list[tuple[float, Literal["min", "max", "max_drop"]]] = []
    if rule.min is not None:
        bounds.append((rule.min, "min"))
    if rule.max is not None:
        bounds.append((rule.max, "max"))
    if rule.max_drop is not None and holdout is not None:
        drop_bound = holdout + rule.max_drop if rule.lower_is_better else holdout - rule.max_drop
        bounds.append((drop_bound, "max_drop"))
    for threshold, kind in bounds:
        worse = value > threshold if rule.lower_is_better else value < threshold
        if worse:
            side = "above" if rule.lower_is_better else "below"
            return Judgement(True, value, threshold, kind,
                             f"{rule.metric} {value:.4f} on {live.n} rows is {side} {threshold:.4f} ({kind})")
    return Judgement(False, value, None, None, f"{rule.metric} {value:.4f} on {live.n} rows meets the rule")


@dataclass(frozen=True)
class VersionQuality:
    model: str
    version: str
    live: LiveQuality
    judgement: Judgement | None  # None for a version the rule is not judged on
    evaluated_at: datetime
    event_id: str | None = None


QualitySink = Callable[[VersionQuality], None]
"""Where each evaluation's result goes (MLflow, Prometheus): evidence, never the verdict."""


class QualityMonitor:
    """Evaluates the specs' versions on the store's joined rows; side effects go through the callables given."""

    def __init__(self, store: OutcomeStore, bus: Bus, topic: str, *, holdout: HoldoutLookup,
                 sinks: Sequence[QualitySink] = ()) -> None:
        self.store = store
        self.bus = bus
        self.topic = topic
        self.holdout = holdout
        self.sinks = tuple(sinks)

    def evaluate(self, spec: ModelSpec, now: datetime, *, window_s: float) -> list[VersionQuality]:
        """Every version of `spec` with labelled rows in the window before `now`; the rule judges the newest
        champion."""
        rule = spec.quality
        window_s = rule.window_s if rule is not None else window_s
        since = now - timedelta(seconds=window_s)
        champion = self.store.latest_version(spec.name, since=since, role=CHAMPION)
        results = []
        for version in self.store.versions(spec.name, since=since, role=None):
            rows = self.store.joined(spec.name, version, since=since, until=now)
            live = live_quality(rows, spec.data.metric_names)
            judgement = event_id = None
            if rule is not None and version == champion:
                judgement = judge(rule, live, self._holdout(spec.name, version, rule))
                event_id = self._episode(spec, version, rule, live, judgement, since, now)
            result = VersionQuality(spec.name, version, live, judgement, now, event_id)
            for sink in self.sinks:
                sink(result)
            results.append(result)
        return results

    def _holdout(self, model: str, version: str, rule: QualityRule) -> float | None:
        if rule.max_drop is None:
            return None
        return self.holdout(model, version, rule.metric)

    def _episode(self, spec: ModelSpec, version: str, rule: QualityRule, live: LiveQuality, judgement: Judgement,
                 since: datetime, now: datetime) -> str | None:
        number, open_ = self.store.episode(spec.name, version, rule.metric)
        if live.n < rule.min_rows or judgement.value is None:
            return None
        if not judgement.degraded:
            if open_:
                self.store.set_episode(spec.name, version, rule.metric, number, False)
            return None
        if open_:
            return None
        number += 1
        identity = f"ctloop.quality/{spec.name}/{version}/{rule.metric}/{number}"
        event = new_event(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, identity)),
            data=QualityDegraded(
                model=spec.name, version=version, metric=rule.metric, value=float(judgement.value),
                threshold=float(judgement.threshold if judgement.threshold is not None else 0.0),
                holdout=self._holdout(spec.name, version, rule), rule=judgement.rule or "min", rows=live.n,
                window_start=since, window_end=now, data_uri=spec.retrain_uri,
            ),
        )
        self.bus.publish(self.topic, to_bytes(event), key=spec.name)
        self.bus.flush()
        self.store.set_episode(spec.name, version, rule.metric, number, True)
        log.warning("quality of %s v%s degraded: %s; raised %s", spec.name, version, judgement.reason, event.id)
        return event.id


def registry_holdout(tracking_uri: str) -> HoldoutLookup:
    """The holdout figure the registry tagged a version with at evaluation, cached per version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    cache: dict[tuple[str, str], dict[str, str]] = {}

    def lookup(model: str, version: str, metric: str) -> float | None:
        if (model, version) not in cache:
            try:
                cache[(model, version)] = dict(client.get_model_version(model, version).tags or {})
            except Exception as exc:
                log.warning("no holdout figures for %s v%s from the registry: %s", model, version, exc)
                return None
        raw = cache[(model, version)].get(HOLDOUT_TAG + metric)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    return lookup


def registry_logger(tracking_uri: str) -> QualitySink:
    """Logs a version's live metrics (`live.<metric>`, `live.rows`) to the MLflow run that produced it."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    runs: dict[tuple[str, str], str | None] = {}

    def log_live(result: VersionQuality) -> None:
        if not result.live.n:
            return
        key = (result.model, result.version)
        try:
            if key not in runs:
                runs[key] = client.get_model_version(*key).run_id or None
            run_id = runs[key]
            if run_id is None:
                return
            ms = int(result.evaluated_at.timestamp() * 1000)
            step = int(result.evaluated_at.timestamp())
            metrics = {**result.live.metrics, "rows": float(result.live.n)}
            client.log_batch(run_id, metrics=[Metric(LIVE_PREFIX + name, float(value), ms, step)
                                              for name, value in metrics.items()])
        except Exception as exc:
            # Live metrics are evidence, not the verdict: a registry outage must not stop the judging.
            log.warning("live quality of %s v%s not logged to MLflow: %s", *key, exc)

    return log_live


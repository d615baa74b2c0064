"""The drift monitor, engine-agnostic: prediction batches in, window outcomes out.

Both runtimes drive it: the embedded service (any `ctloop.bus.Bus`) and the Faust app. It decides
drift, renders and stores evidence, builds the `DriftDetected` event and decides alerts; publishing,
HTTP and offset commits stay with the runtime, which performs them in that order per window.

A drift event names two things: the drifting window's own rows (`rows_uri`, unlabelled, as evidence)
and the labelled data a drift-triggered run retrains on (`data_uri`, the model spec's `retrain_uri`,
which the runtime's edge reads and hands in).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal

from ctloop.crashpoints import crash_point
from ctloop.events import DriftDetected, Event, new_event
from ctloop.monitors.alerts import AlertLedger, AlertPolicy, EpisodeState, decide, slack_message
from ctloop.monitors.detector import DriftDetector, WindowVerdict
from ctloop.monitors.reference import Reference
from ctloop.monitors.report import ReportSink, drift_report_html
from ctloop.monitors.stattests import DriftThresholds
from ctloop.monitors.window import Columns, Rows, TumblingWindows, Window, WindowPolicy
from ctloop.predictions import PredictionBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    window: WindowPolicy = field(default_factory=WindowPolicy)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    # "dataset": a window drifts when the drifted share reaches thresholds.drift_share;
    # "column": when any column drifts.
    trigger: Literal["dataset", "column"] = "dataset"
    # Besides drifting windows, also keep a report for every Nth window (0: never).
    report_every: int = 0


@dataclass(frozen=True)
class WindowOutcome:
    verdict: WindowVerdict
    drifted: bool
    event: Event | None
    alert: dict[str, Any] | None
    report_uri: str | None
    markers: dict[Hashable, Any] = field(default_factory=dict)
    # The alert episode state after this window: what the runtime records before committing it.
    episode: EpisodeState = field(default_factory=EpisodeState)


class DriftMonitor:
    def __init__(
        self,
        reference: Reference,
        config: MonitorConfig | None = None,
        *,
        sink: ReportSink | None = None,
        retrain_uri: str | None = None,
        featurize: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
        ledger: AlertLedger | None = None,
    ) -> None:
        """`featurize`: for non-tabular inputs, turns a batch of served rows into the monitored columns the
        reference profile was built on (the spec's `monitor.featurize`)."""
        self.reference = reference
        self.ledger = ledger
        self.retrain_uri = retrain_uri
        self.featurize = featurize
        self.config = config or MonitorConfig()
        self.detector = DriftDetector(reference.profile, self.config.thresholds)
        self.sink = sink
        self.windows = TumblingWindows(
            self.config.window, self.detector.numeric, self.detector.categorical, keep_rows=sink is not None
        )
        # A restarted monitor carries on with the episode its predecessor recorded.
        self.episode = ledger.load(reference.model).state if ledger is not None else EpisodeState()
        self.closed = 0
        self._version: str | None = reference.version
        self._reference_frame = None

    @property
    def model(self) -> str:
        return self.reference.model

    def accepts(self, batch: PredictionBatch) -> bool:
        """This model's champion batches: a shadow batch repeats inputs already counted with the champion's."""
        return batch.model == self.model and batch.role == "champion"

    def add(self, batch: PredictionBatch, marker: Any = None, stream: Hashable = None) -> list[WindowOutcome]:
        """Fold in one batch of this monitor's model; returns the windows that closed."""
        if not self.accepts(batch):
            raise ValueError(f"{batch.role} batch of model {batch.model!r} given to the monitor of {self.model!r}")
        if batch.version and not self.reference.version:
            self._version = batch.version
        ts = batch.ts if batch.ts.tzinfo else batch.ts.replace(tzinfo=UTC)
        rows: Rows
        if self.featurize is not None:
            rows = self.featurize(list(batch.iter_rows()))
        elif batch.columns is not None and batch.data is not None:
            rows = Columns(batch.columns, batch.data)  # folded column by column: no dict per row
        else:
            rows = batch.rows
        return [self._close(w) for w in self.windows.add(rows, ts, marker, stream)]

    def skip(self, marker: Any, stream: Hashable = None) -> dict[Hashable, Any]:
        """A message with no rows for this monitor (bad, or another model's). It is committed with the
        open window; when that window holds no batch yet, the markers to commit at once are returned."""
        current = self.windows.current
        current.mark(marker, stream)
        if current.batches:
            return {}
        markers = dict(current.markers)
        current.markers.clear()
        return markers

    def tick(self) -> list[WindowOutcome]:
        """Close the open window if its wall-clock time is up (call this when the stream is idle)."""
        window = self.windows.close_due()
        return [self._close(window)] if window else []

    def _close(self, window: Window) -> WindowOutcome:
        self.closed += 1
        verdict = self.detector.detect(window)
        drifted = verdict.dataset_drift if self.config.trigger == "dataset" else verdict.any_drift
        every = self.config.report_every
        report_uri = rows_uri = None
        if self.sink is not None and (drifted or (every and self.closed % every == 0)):
            report_uri = self._report(window, verdict)
            if drifted:
                rows_uri = self.sink.save_rows(_jsonl(window), model=self.model, window_end=verdict.end)
            crash_point("report-written")
        self.episode, alert_now = decide(self.episode, drifted, verdict.end, self.config.alerts)
        event = None
        if drifted:
            # Derived from the window, so a window reprocessed after a crash republishes the same id.
            identity = f"ctloop.drift/{self.model}/{self._version}/{verdict.start}/{verdict.end}/{verdict.rows}"
            event = new_event(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, identity)),
                data=DriftDetected(
                    model=self.model,
                    version=self._version,
                    window_start=verdict.start,
                    window_end=verdict.end,
                    rows=verdict.rows,
                    bad_rows=verdict.bad_rows,
                    drifted_share=verdict.drifted_share,
                    dataset_drift=verdict.dataset_drift,
                    columns=verdict.columns,
                    report_uri=report_uri,
                    data_uri=self.retrain_uri,
                    rows_uri=rows_uri,
                )
            )
        alert = None
        if alert_now:
            alert = slack_message(self.model, self._version, verdict, report_uri, self.episode.episode)
        return WindowOutcome(verdict, drifted, event, alert, report_uri, dict(window.markers), self.episode)

    def _report(self, window: Window, verdict: WindowVerdict) -> str | None:
        assert self.sink is not None
        if self._reference_frame is None:
            self._reference_frame = self.reference.profile.to_frame()
        try:
            html = drift_report_html(
                self._reference_frame,
                window.frame(),
                numeric=self.detector.numeric,
                categorical=self.detector.categorical,
                thresholds=self.config.thresholds,
            )
        except Exception as exc:
            # The verdict stands without its evidence; a report failure must not stop monitoring.
            log.warning("drift report for %s window ending %s failed: %s", self.model, verdict.end, exc)
            return None
        return self.sink.save(html, model=self.model, window_end=verdict.end)


def _jsonl(window: Window) -> bytes:
    lines = (json.dumps(row, default=str, allow_nan=True) for batch in window.kept for row in batch)
    return ("\n".join(lines) + "\n").encode()

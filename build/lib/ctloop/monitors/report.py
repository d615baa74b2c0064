"""Evidently 0.7 HTML drift reports (DataDriftPreset), kept in the object store and in MLflow.

The fast path decides drift; Evidently renders the evidence for a human, only for windows that
drift and every Nth window, because one report costs about as much as thousands of fast verdicts.
"""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import pandas as pd

from ctloop.monitors.stattests import DriftThresholds
from ctloop.objectstore import open_uri

log = logging.getLogger(__name__)
MLFLOW_REPORT_DIR = "drift_reports"


def drift_report_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    thresholds: DriftThresholds | None = None,
) -> str:
    """The DataDriftPreset report as a standalone HTML page.

    Columns with no finite value on either side are left out: Evidently refuses a report with an
    empty column, where the monitor marks that column untested.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    usable = [c for c in [*numeric, *categorical] if _has_values(reference, c) and _has_values(current, c)]
    if not usable:
        raise ValueError("no column has values in both the reference and the current data")
    definition = DataDefinition(
        numerical_columns=[c for c in numeric if c in usable],
        categorical_columns=[c for c in categorical if c in usable],
    )
    share = (thresholds or DriftThresholds()).drift_share
    snapshot = Report([DataDriftPreset(columns=usable, drift_share=share)], include_tests=True).run(
        Dataset.from_pandas(current[usable], data_definition=definition),
        Dataset.from_pandas(reference[usable], data_definition=definition),
    )
    return snapshot.get_html_str(as_iframe=False)


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    if column not in frame:
        return False
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values):
        return bool(np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan)).any())
    return bool(values.notna().any())


class ReportSink:
    """Stores report pages under `<root_uri>/reports/` (file:// or s3://) and, given a run, in MLflow
    too; the rows of drifting windows go under `<root_uri>/windows/`."""

    def __init__(
        self,
        root_uri: str,
        *,
        s3_endpoint_url: str | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self._store, self._prefix = open_uri(root_uri.rstrip("/") + "/", s3_endpoint_url=s3_endpoint_url)
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    def save(self, html: str, *, model: str, window_end: datetime) -> str:
        """Keep one report; returns its object-store URI. MLflow trouble is logged, not raised,
        since the object-store copy is the one the drift event points to."""
        name = f"{_stamp(window_end)}.html"
        uri = self._store.put(f"{self._prefix}reports/{model}/{name}", html.encode())
        if self.tracking_uri and self.run_id:
            try:
                from mlflow.tracking import MlflowClient

                MlflowClient(self.tracking_uri).log_text(self.run_id, html, f"{MLFLOW_REPORT_DIR}/{name}")
            except Exception as exc:
                log.warning("could not log drift report to MLflow run %s: %s", self.run_id, exc)
        return uri

    def save_rows(self, jsonl: bytes, *, model: str, window_end: datetime) -> str:
        """Keep a window's rows as JSON lines; returns their URI."""
        return self._store.put(f"{self._prefix}windows/{model}/{_stamp(window_end)}.jsonl", jsonl)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")

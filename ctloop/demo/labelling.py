"""The demo's stand-in for a labelling job: served rows of a drifting window, joined to their ground truth.

The monitor keeps a drifting window's rows (features as served, no labels) and puts their URI in the
drift event, which the drift sensor hands to the retrain workflow as its data. Training needs labels,
and in production they come from a labelling job that joins outcomes to served rows later. In the
demo the outcomes are known (the story generated them), so this sink keeps the window's rows exactly
as the monitor asked and also writes them, labelled, as a parquet file; the URI it returns, which the
drift event carries, is the prefix holding that labelled file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import datetime

import pandas as pd

from ctloop.objectstore import open_uri
from monitors.report import ReportSink

KEY_COLUMN = "row_id"


class UnknownRow(LookupError):
    """A served row the story never sent: the join has no label for it."""


class GroundTruth:
    """Labels of the rows clients sent, found by the exact feature values served."""

    def __init__(self, frames: Iterable[pd.DataFrame], features: list[str], label: str) -> None:
        self.features = features
        self.label = label
        self._truth: dict[tuple, tuple[int, object]] = {}
        for frame in frames:
            for record in frame.to_dict(orient="records"):
                self._truth[self._key(record)] = (int(record[KEY_COLUMN]), record[label])

    def _key(self, row: dict) -> tuple:
        return tuple(row.get(name) for name in self.features)

    def label_rows(self, rows: list[dict]) -> pd.DataFrame:
        keys, labels = [], []
        for i, row in enumerate(rows):
            found = self._truth.get(self._key(row))
            if found is None:
                raise UnknownRow(f"served row {i} {row} has no ground truth in the story")
            keys.append(found[0])
            labels.append(found[1])
        frame = pd.DataFrame(rows, columns=self.features)
        frame.insert(0, KEY_COLUMN, keys)
        frame[self.label] = labels
        return frame


class LabelledWindowSink(ReportSink):
    """`ReportSink` whose window rows come back labelled, under a prefix a retrain can read."""

    def __init__(self, root_uri: str, truth: GroundTruth, **kwargs: object) -> None:
        super().__init__(root_uri, **kwargs)  # type: ignore[arg-type]
        self.truth = truth
        self._labelled_store, self._labelled_prefix = open_uri(root_uri.rstrip("/") + "/labelled/")
        self.labelled: list[str] = []

    def save_rows(self, jsonl: bytes, *, model: str, window_end: datetime) -> str:
        super().save_rows(jsonl, model=model, window_end=window_end)
        rows = [json.loads(line) for line in jsonl.decode().splitlines() if line.strip()]
        frame = self.truth.label_rows(rows)
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        prefix = f"{self._labelled_prefix}{model}/{window_end.strftime('%Y%m%dT%H%M%S.%fZ')}/"
        self._labelled_store.put(prefix + "window.parquet", buf.getvalue())
        uri = self._labelled_store.uri(prefix).rstrip("/") + "/"
        self.labelled.append(uri)
        return uri

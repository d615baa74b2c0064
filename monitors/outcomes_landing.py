"""Landing: the champion's recently served rows that have a label, written under the spec's `retrain_uri`.

A drift- or quality-triggered run snapshots `retrain_uri`, so it trains on recent, labelled traffic without
any user pipeline. The landing is one parquet object (`labelled.parquet`) holding the spec's feature columns,
its key column when it declares one (the prediction id for a row served without it), and its label column:
the table a data snapshot reads. It is replaced
as new labels join, and only once there are enough rows for the data contract (`data.min_rows`), so a thin
window never replaces a usable one. Rows are written in a fixed order, so the same rows give the same bytes
and the same snapshot digest: a sensor does not retrain twice on unchanged data.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ctloop.modelspec import ModelSpec
from ctloop.monitors.outcomes import CHAMPION, OutcomeStore
from ctloop.objectstore import open_uri

log = logging.getLogger(__name__)
LANDED_OBJECT = "labelled.parquet"
DEFAULT_WINDOW_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Landed:
    model: str
    uri: str
    rows: int


class Lander:
    """Lands each spec's recent joined rows; `land` rewrites a model's object only when its rows changed."""

    def __init__(self, store: OutcomeStore, *, s3_endpoint_url: str | None = None,
                 window_s: float = DEFAULT_WINDOW_S, max_rows: int | None = None) -> None:
        """`max_rows`: land only the newest rows of the window, so a rerun trains on the latest traffic."""
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.store = store
        self.s3_endpoint_url = s3_endpoint_url
        self.window_s = window_s
        self.max_rows = max_rows
        self._landed: dict[str, tuple[int, float]] = {}

    def land(self, spec: ModelSpec, now: datetime) -> Landed | None:
        """Write `spec`'s labelled rows served within the window before `now` (the quality rule's window when
        the spec has one), if there are enough and they changed since the last landing."""
        if spec.retrain_uri is None or spec.data.kind != "table":
            return None
        window_s = spec.quality.window_s if spec.quality is not None else self.window_s
        rows = self.store.joined(spec.name, None, since=now - timedelta(seconds=window_s), role=CHAMPION)
        if self.max_rows is not None:
            rows = rows[-self.max_rows:]
        if len(rows) < spec.data.min_rows:
            return None
        mark = (len(rows), rows[-1].served_at.timestamp())
        if self._landed.get(spec.name) == mark:
            return None
        import pandas as pd

        features = spec.data.feature_names
        frame = pd.DataFrame([{c: r.features.get(c) for c in features} for r in rows], columns=features)
        key = spec.data.key
        if key:
            # The data contract wants every row keyed; a row served without its key is known by its prediction id.
            frame.insert(0, key, [r.features.get(key, r.prediction_id) for r in rows])
        frame[spec.data.label] = [r.label for r in rows]
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        store, prefix = open_uri(_as_prefix(spec.retrain_uri), s3_endpoint_url=self.s3_endpoint_url)
        uri = store.put(prefix + LANDED_OBJECT, buf.getvalue())
        self._landed[spec.name] = mark
        log.info("landed %d labelled rows of %s at %s", len(rows), spec.name, uri)
        return Landed(spec.name, uri, len(rows))


def _as_prefix(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"

"""The demo's stand-in for the user's label-join pipeline: served traffic, once its outcomes are known,
lands labelled under the model spec's `retrain_uri`, where a drift-triggered run retrains.

In production a job joins outcomes to the rows that were served, some time after serving. The story
generated the outcomes, so the demo plays that job: after a window is served it writes the window's
rows with their labels. It keeps the latest window only (a sliding window of recent traffic), so a
drift-triggered run trains on the traffic that drifted rather than on the concept before it, and the
monitor, following the new champion, compares later traffic against that same recent data.
"""

from __future__ import annotations

import io

from ctloop.app.demo.story import TrafficWindow
from ctloop.objectstore import open_uri

RECENT_OBJECT = "labelled.parquet"


class LabelJoin:
    """Writes labelled traffic under one prefix (the spec's `retrain_uri`), replacing what was there."""

    def __init__(self, retrain_uri: str, *, s3_endpoint_url: str | None = None) -> None:
        if not retrain_uri.endswith("/"):
            raise ValueError(f"retrain_uri must be a prefix ending in '/', got {retrain_uri!r}")
        self.retrain_uri = retrain_uri
        self._store, self._prefix = open_uri(retrain_uri, s3_endpoint_url=s3_endpoint_url)

    def land(self, window: TrafficWindow) -> str:
        """The window's rows with their keys and labels, as parquet; returns the object's URI."""
        buf = io.BytesIO()
        window.frame.to_parquet(buf, index=False)
        return self._store.put(self._prefix + RECENT_OBJECT, buf.getvalue())

"""The demo's ground truth: the story knows the outcome of every row it sends to serving. Once a window is
served, its outcomes become known and go out as `ctloop.label.observed` events naming the prediction ids
serving returned, in no particular order, as a CRM or a labelling job would send them. The outcomes runtime
joins them, measures live quality and lands the labelled rows under the spec's `retrain_uri`."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from ctloop.events import LabelObserved, new_event, to_bytes


def label_events(ids: Sequence[str], labels: Sequence[int], observed_at: datetime, *, seed: int) -> list[bytes]:
    """One label event per served prediction, shuffled; each event's id is derived from its prediction's, so a
    label sent again is the same label."""
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} prediction ids but {len(labels)} labels")
    events = [to_bytes(new_event(LabelObserved(prediction_id=pid, label=int(y), observed_at=observed_at),
                                 id=f"label-{pid}", source="urn:ctloop:demo"))
              for pid, y in zip(ids, labels, strict=True)]
    random.Random(seed).shuffle(events)
    return events

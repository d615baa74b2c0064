"""Data arrivals for object stores without notifications: list a prefix, emit once per new object.

The cursor is the set of (key, etag) pairs already emitted, durable in SQLite; it is written after
the bus acknowledged the events, so a crash in between re-emits them with the same event ids
(derived from location and etag), which the sensor recognises as redeliveries.
"""

from __future__ import annotations

import hashlib

from ctloop.bus import Bus
from ctloop.events import DataArrived, Event, new_event, to_bytes
from ctloop.objectstore import ObjectInfo, open_uri
from ctloop.settings import Settings
from ctloop.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS s3_poller_seen (
    poller TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (poller, key, etag)
);
"""


def object_event_id(uri: str, etag: str) -> str:
    """Stable per object version: a re-emit after a crash carries the same id."""
    return hashlib.sha256(f"{uri}\n{etag}".encode()).hexdigest()[:32]


class S3Poller:
    def __init__(self, settings: Settings, bus: Bus, prefix_uri: str, model: str, *, suffix: str = "") -> None:
        self.settings = settings
        self.bus = bus
        self.model = model
        self.suffix = suffix
        self.name = f"{prefix_uri}#{model}"
        self._store, self._prefix = open_uri(prefix_uri, s3_endpoint_url=settings.s3_endpoint_url)
        self._db = connect(settings.state_db)
        self._db.executescript(_SCHEMA)

    def _seen(self) -> set[tuple[str, str]]:
        rows = self._db.execute("SELECT key, etag FROM s3_poller_seen WHERE poller = ?", (self.name,))
        return {(k, e) for k, e in rows}

    def _event(self, obj: ObjectInfo) -> Event:
        uri = self._store.uri(obj.key)
        payload = DataArrived(model=self.model, uri=uri, size=obj.size)
        return new_event(payload, id=object_event_id(uri, obj.etag), source="urn:ctloop:s3-poller")

    def poll(self) -> list[Event]:
        """Emit one event per object not emitted before (a changed etag is a new version); returns them."""
        seen = self._seen()
        fresh = [o for o in self._store.list(self._prefix)
                 if o.key.endswith(self.suffix) and (o.key, o.etag) not in seen]
        events = [self._event(o) for o in fresh]
        for event in events:
            self.bus.publish(self.settings.topics.data, to_bytes(event), key=self.model)
        self.bus.flush()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO s3_poller_seen VALUES (?, ?, ?, ?, strftime('%s','now'))",
                [(self.name, o.key, o.etag, e.id) for o, e in zip(fresh, events, strict=True)],
            )
        return events

    def close(self) -> None:
        self._db.close()

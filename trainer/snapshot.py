"""Data snapshots: the exact set of objects a run reads, pinned by a content digest.

A dataset is the .parquet and .csv objects under a URI (file://, a bare path, or s3://; one object
or a prefix). The digest covers each object's key relative to the snapshot root, size and etag, so
the same data always gives the same digest and any change, addition or removal gives a new one.
"""

from __future__ import annotations

import hashlib
import io
import re
from urllib.parse import urlparse

import pandas as pd
from pydantic import BaseModel, ConfigDict

from ctloop.failures import Failure
from ctloop.objectstore import ObjectInfo, ObjectStore, StoreError, open_uri

DATA_SUFFIXES = (".parquet", ".csv")
_DIGEST_FORMAT = b"ctloop-snapshot-v1\n"


class SnapshotError(ValueError, Failure):
    """The data a snapshot pins cannot be read as pinned; the message names the object."""


class SnapshotObject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    size: int
    etag: str


class Snapshot(BaseModel):
    """Which objects a run reads. `digest` identifies the data for idempotency and lineage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    digest: str
    objects: tuple[SnapshotObject, ...]
    root: str = ""
    """Key prefix the digest takes object keys relative to, so a copy of the data elsewhere digests the same."""


def is_data_key(key: str) -> bool:
    return key.lower().endswith(DATA_SUFFIXES)


def compute_digest(root: str, objects: tuple[SnapshotObject, ...]) -> str:
    h = hashlib.sha256(_DIGEST_FORMAT)
    for obj in sorted(objects, key=lambda o: o.key):
        rel = obj.key[len(root):] if obj.key.startswith(root) else obj.key
        h.update(f"{rel}\t{obj.size}\t{obj.etag}\n".encode())
    return h.hexdigest()


def take_snapshot(uri: str, *, s3_endpoint_url: str | None = None) -> Snapshot:
    """List the data objects under `uri` now and pin them."""
    store, key = open_uri(uri, s3_endpoint_url=s3_endpoint_url)
    listed = store.list(key)
    exact = [o for o in listed if o.key == key]
    if exact:
        root = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        chosen = exact
    else:
        root = key if not key or key.endswith("/") else key + "/"
        chosen = [o for o in listed if o.key.startswith(root)]
    objects = tuple(SnapshotObject(key=o.key, size=o.size, etag=o.etag) for o in chosen if is_data_key(o.key))
    if urlparse(uri).scheme in ("", "file"):
        # pin local data by absolute file:// URI, so a later step in another working directory reads the same files
        uri = store.uri(key) + ("/" if key.endswith("/") else "")
    return Snapshot(uri=uri, root=root, digest=compute_digest(root, objects), objects=objects)


def read_object(snapshot: Snapshot, obj: SnapshotObject, *, store: ObjectStore) -> pd.DataFrame:
    """One pinned object as a frame; raises SnapshotError if it changed since the snapshot."""
    try:
        data = store.get(obj.key)
    except StoreError as exc:
        raise SnapshotError(f"{store.uri(obj.key)}: pinned by snapshot {snapshot.digest[:12]} but {exc}") from None
    _verify_unchanged(store, obj, data)
    return parse_object(obj.key, data)


def parse_object(key: str, data: bytes) -> pd.DataFrame:
    buf = io.BytesIO(data)
    if key.lower().endswith(".parquet"):
        return pd.read_parquet(buf)
    return pd.read_csv(buf)


def open_snapshot_store(snapshot: Snapshot, *, s3_endpoint_url: str | None = None) -> ObjectStore:
    store, _ = open_uri(snapshot.uri, s3_endpoint_url=s3_endpoint_url)
    return store


def load_frame(snapshot: Snapshot, *, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """Exactly the pinned objects, concatenated in key order."""
    if not snapshot.objects:
        raise SnapshotError(f"snapshot of {snapshot.uri} holds no .parquet or .csv objects")
    store = open_snapshot_store(snapshot, s3_endpoint_url=s3_endpoint_url)
    frames = [read_object(snapshot, obj, store=store) for obj in snapshot.objects]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


_HEX = re.compile(r"^[0-9a-f]+$")


def _verify_unchanged(store: ObjectStore, obj: SnapshotObject, data: bytes) -> None:
    """Compare content against the pinned etag when the etag is a content hash, else re-list.

    Local etags are sha256 and single-part S3 etags are md5 of the content; multipart or encrypted
    S3 etags are neither, and then the store's current listing decides.
    """
    if len(data) == obj.size and _HEX.match(obj.etag):
        algo = {64: hashlib.sha256, 32: hashlib.md5}.get(len(obj.etag))
        if algo is not None and algo(data).hexdigest() == obj.etag:
            return
    current: ObjectInfo | None = next((o for o in store.list(obj.key) if o.key == obj.key), None)
    if len(data) != obj.size or current is None or (current.size, current.etag) != (obj.size, obj.etag):
        now = "gone" if current is None else f"size {current.size}, etag {current.etag}"
        raise SnapshotError(
            f"{store.uri(obj.key)} changed since the snapshot was taken "
            f"(pinned size {obj.size}, etag {obj.etag}; now {now})"
        )

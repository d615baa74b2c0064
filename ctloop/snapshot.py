"""Data snapshots: the exact set of objects a run reads, pinned by a content digest.

A dataset is the data files under a URI (file://, a bare path, or s3://; one object or a prefix):
tables (.parquet, .csv) or any other file dataset (images, arrays, JSON lines; see DATA_SUFFIXES).
The digest covers each file's key relative to the snapshot root, size and etag (a per-file content
digest: sha256 locally, md5 for single-part S3 objects), so the same data always gives the same
digest and any change, addition or removal gives a new one. Taken once per event, by whoever first
needs it (the sensor for the run key, the workflow's snapshot step for the run), and passed on.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from pydantic import BaseModel, ConfigDict

from ctloop.failures import Failure
from ctloop.objectstore import ObjectInfo, ObjectStore, StoreError, check_key, open_uri

TABLE_SUFFIXES = (".parquet", ".csv")
DATA_SUFFIXES = (*TABLE_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                 ".npy", ".npz", ".jsonl", ".wav", ".flac")
"""What counts as data. Plain .txt/.json are left out: beside a table they are usually notes or metadata."""
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


def is_table_key(key: str) -> bool:
    return key.lower().endswith(TABLE_SUFFIXES)


def table_objects(snapshot: Snapshot) -> tuple[SnapshotObject, ...]:
    return tuple(o for o in snapshot.objects if is_table_key(o.key))


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
    """Exactly the pinned tables, concatenated in key order."""
    tables = table_objects(snapshot)
    if not tables:
        raise SnapshotError(f"snapshot of {snapshot.uri} holds no .parquet or .csv objects")
    store = open_snapshot_store(snapshot, s3_endpoint_url=s3_endpoint_url)
    frames = [read_object(snapshot, obj, store=store) for obj in tables]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def relative_key(snapshot: Snapshot, obj: SnapshotObject) -> str:
    return obj.key[len(snapshot.root):] if obj.key.startswith(snapshot.root) else obj.key


def materialize(snapshot: Snapshot, objects: tuple[SnapshotObject, ...], target: Path, *,
                s3_endpoint_url: str | None = None) -> list[Path]:
    """The pinned files as local paths under `target` (same relative layout), each checked against its pin.

    Local files are copied too: user code then reads a frozen copy, never a file that changes under it.
    """
    store = open_snapshot_store(snapshot, s3_endpoint_url=s3_endpoint_url)
    paths = []
    for obj in objects:
        try:
            data = store.get(obj.key)
        except StoreError as exc:
            raise SnapshotError(f"{store.uri(obj.key)}: pinned by snapshot {snapshot.digest[:12]} but {exc}") from None
        _verify_unchanged(store, obj, data)
        path = target / check_key(relative_key(snapshot, obj))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


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

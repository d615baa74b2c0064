"""One small object-store interface with the same URIs locally (file://) and on S3/MinIO (s3://)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlparse

from ctloop.failures import Refused


class StoreError(ValueError, Refused):
    """A URI or key that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(Protocol):
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> str:
        """Write an object; returns its URI."""

    def uri(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """Reject keys that could escape their prefix (`..`, absolute, NUL), a path-traversal guard."""
    if "\x00" in key:
        raise StoreError(f"invalid object key {key!r}: contains NUL")
    parts = PurePosixPath(key).parts
    if key.startswith("/") or ".." in parts:
        raise StoreError(f"invalid object key {key!r}: path traversal is not allowed")
    return key


class LocalStore:
    """Objects as files under `root`; the etag is the file's sha256, so it tracks content."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            candidates = [base]
        elif base.is_dir():
            candidates = [p for p in base.rglob("*") if p.is_file()]
        elif prefix.endswith("/") or not base.parent.is_dir():
            candidates = []
        else:
            # A partial name ("data/2026-") matches siblings: only then is the parent walked.
            candidates = [p for p in base.parent.rglob("*") if p.is_file()]
        out = []
        for path in candidates:
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith("."):
                out.append(ObjectInfo(key, path.stat().st_size, _sha256_file(path)))
        return sorted(out, key=lambda o: o.key)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise StoreError(f"no such object: {self.uri(key)}")
        return path.read_bytes()

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return self.uri(key)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()


class S3Store:
    """Objects in one S3 bucket through boto3; `endpoint_url` points it at MinIO or a test server."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, client: object | None = None) -> None:
        import boto3

        self.bucket = bucket
        self._s3 = client or boto3.client("s3", endpoint_url=endpoint_url)

    def list(self, prefix: str) -> list[ObjectInfo]:
        out = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append(ObjectInfo(obj["Key"], int(obj["Size"]), obj["ETag"].strip('"')))
        return sorted(out, key=lambda o: o.key)

    def get(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise StoreError(f"no such object: {self.uri(key)}") from None

    def put(self, key: str, data: bytes) -> str:
        self._s3.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)
        return self.uri(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def open_uri(uri: str, *, s3_endpoint_url: str | None = None) -> tuple[ObjectStore, str]:
    """The store that holds `uri`, and the key (or prefix) inside it.

    A bare path is taken as a local path. Local stores are rooted at the filesystem root so that
    `store.uri(key)` gives back the same file:// URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme else uri).resolve()
        key = path.as_posix().lstrip("/")
        if uri.endswith("/") and key:
            key += "/"
        return LocalStore("/"), key
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"invalid URI {uri!r}: s3:// needs a bucket")
        return S3Store(parsed.netloc, endpoint_url=s3_endpoint_url), parsed.path.lstrip("/")
    raise StoreError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use file:// or s3://)")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""A per-model promotion lock (`fcntl.flock` on a file), exclusive across threads and processes.

MLflow aliases are blind upserts, so everything that moves them holds this lock. flock locks belong
to an open file description, so two opens of the same file exclude each other even in one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ctloop.failures import Failure


class LockTimeout(TimeoutError, Failure):
    pass


def lock_stem(model: str) -> str:
    """A file name for the model that cannot escape the lock directory or collide after cleaning."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:80]
    return f"{safe}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


@contextmanager
def model_lock(lock_dir: Path, model: str, *, timeout_s: float = 120.0) -> Iterator[Path]:
    """Hold the model's lock; yields the lock file's path (its siblings hold per-model state)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{lock_stem(model)}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"promotion lock for model {model!r} ({path}) still held after {timeout_s}s"
                    ) from None
                time.sleep(0.05)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

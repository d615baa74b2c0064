"""Named locks shared by every process on the machine: Argo's `synchronization` mutex, locally.

An exclusive `flock` on a file per name; the kernel releases it when the holder dies, so a crashed
run never leaves a mutex held.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class FileLock:
    """One exclusive lock file; `acquire(blocking=False)` says whether it got it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_path(root: Path, name: str) -> Path:
    return root / f"{_UNSAFE.sub('_', name)}.lock"


@contextmanager
def mutex(root: Path, name: str) -> Iterator[None]:
    """Hold the machine-wide mutex `name` for the duration of the block."""
    lock = FileLock(lock_path(root, name))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()

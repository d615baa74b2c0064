"""The local memoization cache: a step's outputs under (cache name, key), as Argo keeps them in a ConfigMap.

A step whose key is cached and younger than its maxAge is not run; its recorded outputs are reused.
Only successful steps are cached. Entries are written with synchronous=NORMAL: a cache entry lost
to a power cut only costs a recomputation, and skipping the fsync keeps a cached step cheap.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ctloop.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wf_memo (
    cache TEXT NOT NULL,
    key TEXT NOT NULL,
    outputs TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (cache, key)
);
"""


class MemoCache:
    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get(self, cache: str, key: str, *, max_age_s: float | None) -> dict[str, dict[str, str]] | None:
        with self._lock:
            row = self._db.execute("SELECT outputs, created_at FROM wf_memo WHERE cache = ? AND key = ?",
                                   (cache, key)).fetchone()
        if row is None or (max_age_s is not None and time.time() - row[1] > max_age_s):
            return None
        return json.loads(row[0])

    def put(self, cache: str, key: str, outputs: dict[str, dict[str, str]], run_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO wf_memo VALUES (?, ?, ?, ?, ?) ON CONFLICT (cache, key) DO UPDATE SET"
                " outputs = excluded.outputs, run_id = excluded.run_id, created_at = excluded.created_at",
                (cache, key, json.dumps(outputs), run_id, time.time()),
            )

    def close(self) -> None:
        self._db.close()

"""A throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl in a temp dir) for tests and benchmarks.

It sits beside `kafka_local` for the same reason: the test fixtures and the `bench/` scripts both start one,
and an installed module is importable from either without putting the test tree on `sys.path` or needing
pytest. As root the server runs as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctloop.failures import Failure
from ctloop.kafka_local import free_port

START_TIMEOUT_S = 120


class NoPostgres(Failure):
    """No PostgreSQL server binaries on this machine."""

    fix = "install them (apt-get install postgresql) or pass the URL of a server you run"


def bin_dir() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest `/usr/lib/postgresql/*/bin`."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]


@contextlib.contextmanager
def local_postgres(*, fsync: bool = True) -> Iterator[str]:
    """Start a fresh server, yield a SQLAlchemy URL of its `postgres` database, stop it and delete its files.

    `fsync=False` trades durability for speed (tests); a benchmark keeps it on to measure what a server pays.
    """
    bindir = bin_dir()
    if bindir is None:
        raise NoPostgres("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql")
    root = Path(tempfile.mkdtemp(prefix="ctloop-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1" + ("" if fsync else " -c fsync=off")
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "ctloop", "--auth=trust",
                                        "-E", "UTF8"]), check=True, capture_output=True, timeout=START_TIMEOUT_S)
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                                        "-o", options, "start"]),
                       check=True, capture_output=True, timeout=START_TIMEOUT_S)
        yield f"postgresql+psycopg2://ctloop@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


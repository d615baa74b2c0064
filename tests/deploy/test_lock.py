"""The promotion lock lives in the registry: processes that share nothing but a real `mlflow server`
exclude each other, a killed holder blocks the others for one lease at most, and a holder whose
lease ran out finds out before its next write."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.deploy.lock import LOCK_PREFIX, Lease, LockLost, LockTimeout, model_lock
from ctloop.deploy.registry import NotFound, Registry, Retry

pytestmark = pytest.mark.mlflow_server
ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen:
    """A process of tests/deploy/promoter_process.py, once it says READY."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.deploy.promoter_process", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"promoter process said {line!r} instead of READY")
    return proc


@pytest.fixture
def registry(mlflow_server: str, model_name: str) -> Iterator[Registry]:
    registry = Registry(mlflow_server)
    registry.ensure_model(model_name)
    yield registry


def tickets(registry: Registry, model: str) -> list[str]:
    return [k for k in registry.model(model).tags if k.startswith(LOCK_PREFIX)]


def test_processes_sharing_only_the_registry_never_hold_the_lock_together(mlflow_server, registry, model_name,
                                                                          tmp_path):
    logs = [tmp_path / f"p{i}.log" for i in range(4)]
    procs = [spawn("exclusive", mlflow_server, model_name, str(log), "5") for log in logs]
    for proc in procs:
        assert proc.wait(timeout=240) == 0

    spans = []
    for log in logs:
        stamps = [float(line.split()[1]) for line in log.read_text().splitlines()]
        spans += list(zip(stamps[::2], stamps[1::2], strict=True))
    spans.sort()
    assert len(spans) == 20
    for (_, left), (entered, _) in itertools.pairwise(spans):
        assert entered >= left, f"two processes held the lock at once: one entered at {entered}, before {left}"
    assert tickets(registry, model_name) == []


def test_a_killed_holder_blocks_the_others_for_one_lease_at_most(mlflow_server, registry, model_name):
    holder = spawn("hold", mlflow_server, model_name, "3")
    assert len(tickets(registry, model_name)) == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()

    with model_lock(registry, model_name, lease=Lease(ttl_s=3, renew_every_s=0.5, margin_s=1, wait_s=30)):
        waited = time.monotonic() - killed
        assert len(tickets(registry, model_name)) == 1

    # The dead holder's ticket was renewed every 0.5 s with a 3 s lease: it lapsed 2.5-3 s after the kill.
    assert 1.5 < waited < 10, f"waited {waited:.1f}s for a lease of 3s"
    assert tickets(registry, model_name) == []


def test_a_lock_still_held_past_the_wait_is_a_timeout_that_names_the_model(mlflow_server, registry, model_name):
    holder = spawn("hold", mlflow_server, model_name, "30")
    try:
        with pytest.raises(LockTimeout, match=f"model '{model_name}' still held after 1"), model_lock(
            registry, model_name, lease=Lease(wait_s=1)
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert len(tickets(registry, model_name)) == 1, "the waiter withdrew its own ticket, not the holder's"


def test_a_holder_whose_lease_ran_out_finds_out_before_writing(killable_mlflow_server, mlflow_server, model_name):
    Registry(mlflow_server).ensure_model(model_name)
    server = killable_mlflow_server
    registry = Registry(server.url, retry=Retry(attempts=2, base_delay_s=0.1, timeout_s=1))
    with model_lock(registry, model_name, lease=Lease(ttl_s=2, renew_every_s=0.3, margin_s=0.6)) as held:
        held.check()
        server.kill()
        time.sleep(1.6)
        with pytest.raises(LockLost, match="lease"):
            held.check()
        server.start()


def test_locking_a_model_the_registry_does_not_have_is_not_found(registry):
    with pytest.raises(NotFound, match="no registered model 'nope-"), model_lock(registry, f"nope-{os.getpid()}"):
        pass

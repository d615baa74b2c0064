"""Gateway replicas as processes of their own (`gateway_process`) in one consumer group, their state in one
store: started, waited for until they share the admission topic's partitions, SIGKILLed, stopped. Shared by
`test_replica_kill.py` and `bench/gateway.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ctloop.sensors.gateway import GatewayStore

REPO = Path(__file__).resolve().parents[3]


class Replicas:
    """One process per name, `engine` the arguments choosing its engine (`--ledger DB` or `--instant`, and any
    tuning); `env` adds to the CTLOOP_* settings given. Use as a context manager: the ones still running are
    stopped (SIGTERM) at the end."""

    def __init__(self, names: Sequence[str], *, group: str, bootstrap: str, topic: str, store_url: str, home: Path,
                 engine: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        settings = {"PYTHONPATH": str(REPO), "CTLOOP_HOME": str(home), "CTLOOP_BUS": "kafka",
                    "CTLOOP_KAFKA_BOOTSTRAP": bootstrap, "CTLOOP_TOPICS__ADMISSION": topic,
                    "CTLOOP_GATEWAY_STORE_URL": store_url, **(env or {})}
        command = [sys.executable, "-m", "tests.sensors.gateway.gateway_process", group]
        self.procs = {name: subprocess.Popen([*command, name, *engine], env={**os.environ, **settings}, cwd=REPO)
                      for name in names}
        self.observer = GatewayStore(store_url, "observer")

    def wait_shared(self, partitions: int, timeout_s: float = 120.0) -> None:
        """Until every replica owns some of the `partitions` and together they own them all."""
        deadline = time.monotonic() + timeout_s
        while True:
            owners = self.observer.owners()
            if set(owners.values()) == set(self.procs) and len(owners) == partitions:
                return
            assert time.monotonic() < deadline, f"the replicas did not share the partitions: {owners}"
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL replica `name` and reap it."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        self.observer.close()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

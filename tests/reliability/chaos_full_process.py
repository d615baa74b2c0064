"""The sensor with its local engine running the production retrain template, wired as `ctloop sensor run`
wires them (an engine that restarts interrupted runs, as often as the first argument allows; no coalescing
window), for the full-template chaos run.

Usage: python -m tests.reliability.chaos_full_process RETRY_INTERRUPTED   (settings from CTLOOP_* env)
"""

from __future__ import annotations

import faulthandler
import signal
import sys

import torch

from ctloop.settings import Settings
from ctloop.workflows.engine_factory import open_engine
from tests.reliability.chaos_process import run_sensor


def main() -> None:
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a stalled process is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The models are tiny; on a shared host extra intra-op threads only spin against other tenants.
    torch.set_num_threads(1)
    settings = Settings()
    run_sensor(settings, open_engine(settings, retry_interrupted=int(sys.argv[1])), client_id="ctloop-chaos-full")


if __name__ == "__main__":
    main()

"""Where the gateway sends admitted runs: any engine that submits without waiting and reports a run's status."""

from __future__ import annotations

from typing import Protocol

from ctloop.settings import Settings
from ctloop.workflows.engine import RunHandle, RunRequest, RunStatus


class Submitter(Protocol):
    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        """Start the run; raises `AlreadyRan` for a key the engine already holds."""

    def status(self, run_id: str) -> RunStatus:
        """The run's status; a `LookupError` for an id the engine does not know."""


def open_submitter(settings: Settings) -> Submitter:
    """`ArgoEngine` in the cluster (`CTLOOP_ENGINE=argo`), the `LocalEngine` on one machine."""
    from ctloop.workflows.engine_factory import open_engine

    return open_engine(settings, retry_interrupted=1)

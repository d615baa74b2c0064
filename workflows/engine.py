"""What any engine (local or Argo) accepts and returns; sensors and the CLI talk to this only."""

from __future__ import annotations

from hashlib import sha256
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ctloop.failures import Refused

RunStatus = Literal["Pending", "Running", "Succeeded", "Failed", "Error", "Skipped"]
FINAL_STATUSES: frozenset[str] = frozenset({"Succeeded", "Failed", "Error", "Skipped"})


class RunRequest(BaseModel):
    """A run to start. `idempotency_key`, when given, is the key the caller already derived (a sensor's
    mapping); an engine then uses it as it is instead of deriving one (`ctloop.workflows.arguments.run_key`)."""

    model_config = ConfigDict(frozen=True)

    model: str
    data_uri: str
    trigger_event_id: str | None = None
    trigger: str = "manual"
    data_digest: str | None = None
    gpu: bool = False
    params: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None


class RunHandle(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    idempotency_key: str
    status: RunStatus


class AlreadyRan(RuntimeError):
    """A run with this idempotency key already succeeded (locally) or exists (on Argo)."""

    def __init__(self, key: str, run_id: str | None = None) -> None:
        super().__init__(f"a run with idempotency key {key} already exists" + (f" ({run_id})" if run_id else ""))
        self.key = key
        self.run_id = run_id


class RunNotFound(LookupError, Refused):
    """An engine has no run with this id."""

    fix = "`ctloop runs list` shows the runs there are"


class Engine(Protocol):
    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        """Start the retrain workflow; raises AlreadyRan for a key that already ran."""

    def status(self, run_id: str) -> RunStatus:
        """The run's status; raises RunNotFound for an id the engine does not know."""


def idempotency_key(model: str, data_digest: str, code_version: str, params: dict[str, str] | None = None) -> str:
    """model + data digest + code version + params: the same key never trains twice."""
    material = "\n".join([model, data_digest, code_version, *(f"{k}={v}" for k, v in sorted(params.items()))]) \
        if params else f"{model}\n{data_digest}\n{code_version}"  # the sensor's case, once per event: no sort, no join
    return sha256(material.encode()).hexdigest()[:32]

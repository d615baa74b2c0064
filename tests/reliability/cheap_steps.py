"""A training step that costs only time: the chaos runs exercise the engine's bookkeeping, not torch."""

# No `from __future__ import annotations`: Hera reads the annotations at build time.

import os
import time
from typing import Annotated

from hera.workflows import Parameter
from hera.workflows.io import Output

# A file each execution appends its key to, when set: a count of trainings that no engine layer can hide.
LEDGER_ENV = "CTLOOP_TEST_TRAIN_LEDGER"


class Trained(Output):
    model_uri: Annotated[str, Parameter(name="model-uri")]


def train(model: Annotated[str, Parameter(name="model")], digest: Annotated[str, Parameter(name="data-digest")],
          key: Annotated[str, Parameter(name="key")], seconds: Annotated[float, Parameter(name="seconds")]) -> Trained:
    """Takes `seconds`, so that a kill often lands while a run is training; `key` names the memo entry."""
    time.sleep(seconds)
    ledger = os.environ.get(LEDGER_ENV)
    if ledger:
        with open(ledger, "a") as out:
            out.write(key + "\n")
    return Trained(model_uri=f"cheap://{model}/{digest}/{key}")

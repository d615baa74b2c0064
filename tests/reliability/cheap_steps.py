"""A training step that costs only time: the chaos runs exercise the engine's bookkeeping, not torch."""

# No `from __future__ import annotations`: Hera reads the annotations at build time.

import time
from typing import Annotated

from hera.workflows import Parameter
from hera.workflows.io import Output


class Trained(Output):
    model_uri: Annotated[str, Parameter(name="model-uri")]


def train(model: Annotated[str, Parameter(name="model")], digest: Annotated[str, Parameter(name="data-digest")],
          key: Annotated[str, Parameter(name="key")], seconds: Annotated[float, Parameter(name="seconds")]) -> Trained:
    """Takes `seconds`, so that a kill often lands while a run is training; `key` names the memo entry."""
    time.sleep(seconds)
    return Trained(model_uri=f"cheap://{model}/{digest}/{key}")

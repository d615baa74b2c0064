"""ctloop: event-driven continuous training.

Public API for user code: `TrainContext` and `TrainResult`, the training contract (ctloop.training).
They load on first use, so `import ctloop` (the CLI, the sensor) pays for no torch, pandas or mlflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctloop.training import TrainContext, TrainResult

__all__ = ["TrainContext", "TrainResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ctloop import training

        return getattr(training, name)
    raise AttributeError(f"module 'ctloop' has no attribute {name!r}")

"""The training contract: what ctloop hands a user's trainer function and what it takes back.

A trainer is an ordinary function in the user's own package, named in the model spec as
`"trainer": "my_team.churn:train"`. ctloop calls it with one `TrainContext` and expects one
`TrainResult`; around it ctloop snapshots and validates the data, owns the holdout split (never handed
to user code), opens the MLflow run, logs and smoke-tests the model, scores it against the champion
and registers it with its lineage. See docs/trainers.md for the full guide.

This module imports neither torch nor mlflow, so `from ctloop import TrainContext` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from ctloop.modelspec import DataSchema

MetricLogger = Callable[[Mapping[str, float], int | None], None]


@dataclass(frozen=True)
class TrainContext:
    """Everything a trainer gets. Tabular snapshots fill `train`/`validation`; file datasets fill the
    `*_files`/`*_labels` pairs (local copies of the pinned files, label = the file's parent directory)."""

    params: Mapping[str, Any]
    """The spec's free-form `params`, with any per-run overrides applied; passed through untouched."""
    seed: int
    """Already applied to `random`, numpy and torch before the trainer is called."""
    device: torch.device
    """CUDA (this rank's GPU under torchrun) when present, else CPU."""
    output_dir: Path
    """Scratch directory for this run; removed afterwards. Put files your model loads here (see `artifacts`)."""
    schema: DataSchema
    """The spec's data schema: task (binary, multiclass, regression), label, features, classes."""
    data_digest: str = ""
    """The snapshot's content digest: names exactly the data this run trains on (e.g. for checkpoint identity)."""
    train: pd.DataFrame | None = None
    validation: pd.DataFrame | None = None
    train_files: tuple[Path, ...] = ()
    train_labels: tuple[str, ...] = ()
    validation_files: tuple[Path, ...] = ()
    validation_labels: tuple[str, ...] = ()
    checkpoint_dir: Path | None = None
    """Where to write (and resume from) checkpoints, so a retried step continues; None: do not checkpoint."""
    rank: int = 0
    world_size: int = 1
    """Under torchrun with more than one process each rank calls the trainer; rank 0's result is logged."""
    _log: MetricLogger | None = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.schema.task

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metrics on the MLflow run ctloop opened (only rank 0 writes; other ranks are no-ops)."""
        if self._log is not None:
            self._log({k: float(v) for k, v in metrics.items()}, step)

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.log_metrics({name: value}, step)


@dataclass(frozen=True)
class TrainResult:
    """What a trainer returns: the model, an input example, and optionally metrics of its own.

    `model` is an `mlflow.pyfunc.PythonModel` instance, or a `torch.nn.Module` together with
    `predict(module, model_input) -> predictions`. Its input is what serving will be sent (for tabular
    data, a DataFrame of the feature columns); `input_example` is a few rows of it, on which ctloop
    smoke-tests predict before anything is registered.
    """

    model: Any
    input_example: Any
    predict: Callable[[Any, Any], Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Logged on the run as they are (e.g. a best validation loss); not used for promotion."""
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    """Files logged with a PythonModel, read back in its `load_context` as `context.artifacts[name]`."""
    predict_params: Mapping[str, Any] = field(default_factory=dict)
    """Inference parameters predict accepts, with defaults; they enter the model signature. A classifier
    that returns one probability column per class for `params={"output": "proba"}` gets roc_auc, pr_auc
    and log_loss scored too."""

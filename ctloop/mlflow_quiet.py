"""MLflow's chatter kept out of ctloop's commands: its INFO lines, progress bars and hints (type hints on
`predict`, integer columns in a signature) are for MLflow's own users, not for someone training with ctloop.
Warnings from anywhere else (a user's trainer, torch) still show."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path


def quiet_mlflow() -> None:
    """Hush MLflow for the rest of this process; for command-line entry points, not for the library."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    # MLflow sets its loggers' levels when imported, so they are lowered after.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Filters do not hold: some MLflow calls reset them (catch_warnings + "once") around their own warnings.
    # What is shown is decided at the end instead, by where the warning points: inside MLflow's package.
    package = str(Path(mlflow.__file__).parent) + os.sep
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if not str(filename).startswith(package):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning

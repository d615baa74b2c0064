"""`quiet_mlflow`: MLflow's own warnings and INFO lines are hidden from ctloop's commands, nobody else's."""

import subprocess
import sys

SCRIPT = """
import logging, warnings
from pathlib import Path
import mlflow
from ctloop.mlflow_quiet import quiet_mlflow
quiet_mlflow()
inside = str(Path(mlflow.__file__).parent / "pyfunc" / "utils" / "data_validation.py")
warnings.warn_explicit("from mlflow's package", UserWarning, inside, 187)
warnings.warn_explicit("from the user's trainer", UserWarning, "/home/user/trainer.py", 3)
logging.basicConfig(level=logging.INFO)
logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
logging.getLogger("mlflow").error("a real MLflow error")
"""


def test_mlflow_chatter_is_hidden_and_everything_else_still_shows():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    assert "from mlflow's package" not in done.stderr
    assert "from the user's trainer" in done.stderr
    assert "Creating initial MLflow database tables" not in done.stderr
    assert "a real MLflow error" in done.stderr

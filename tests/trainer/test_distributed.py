"""Data-parallel training under torchrun: ranks agree, and only rank 0 talks to MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ctloop.trainer.train import TrainedRun
from tests.trainer.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_train_one_model_and_log_one_run(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data")
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tests.trainer.ddp_worker", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    rank0, rank1 = (TrainedRun.model_validate_json((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert run.info.run_id == rank0.run_id
    assert run.data.params["world_size"] == "2"
    assert run.data.tags["ctloop.weight_hash"] == rank0.weight_hash

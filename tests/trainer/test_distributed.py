"""Data-parallel training under torchrun: ranks agree, and only rank 0 talks to MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ctloop.trainer.train import TrainedRun
from tests.trainer.conftest import write_dataset
from tests.trainer.ddp_worker import LINGER_S

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    write_dataset(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tests.trainer.ddp_worker", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_two_ranks_train_one_model_and_log_one_run(tmp_path: Path) -> None:
    launched = _torchrun(tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    rank0, rank1 = (TrainedRun.model_validate_json((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert run.info.run_id == rank0.run_id
    assert run.data.params["world_size"] == "2"
    assert run.data.tags["ctloop.weight_hash"] == rank0.weight_hash


def test_when_rank_0_fails_while_logging_the_other_rank_stops_at_once_with_its_error(tmp_path: Path) -> None:
    """Rank 0 tells every rank its outcome, a failure included, so rank 1 need not wait for rank 0's process to
    end (here it lingers 30 s) or for the process group's timeout (minutes)."""
    launched = _torchrun(tmp_path, "fail-logging")
    assert launched.returncode != 0
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["error"] == "ConnectionError: the tracking server went away while logging the model"
    assert rank1["error"] == f"RankFailed: rank 0 failed, so rank 1 stops: {rank0['error']}"
    waited = rank1["at"] - float((tmp_path / "failed_at").read_text())
    assert 0 <= waited < LINGER_S / 3, f"rank 1 stopped {waited:.1f} s after rank 0 failed"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert run.info.status == "FAILED"

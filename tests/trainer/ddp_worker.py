"""One torchrun rank of tests/trainer/test_distributed.py: train and write this rank's result."""

import os
import sys
from pathlib import Path

import torch

from ctloop.snapshot import take_snapshot
from ctloop.trainer.train import train
from tests.trainer.conftest import make_spec

if __name__ == "__main__":
    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    result = train(take_snapshot(str(root / "data")), make_spec(epochs=3), tracking_uri=f"sqlite:///{root}/mlflow.db")
    (root / f"rank{os.environ['RANK']}.json").write_text(result.model_dump_json())

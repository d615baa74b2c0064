"""One torchrun rank of tests/trainer/test_distributed.py: train and write this rank's result, or, with
`fail-logging`, have rank 0 fail while logging the model and then linger, and write when this rank failed and
with what error."""

import json
import os
import sys
import time
from pathlib import Path

import torch

from ctloop.snapshot import take_snapshot
from ctloop.trainer import lineage
from ctloop.trainer.train import train
from tests.trainer.conftest import make_spec

LINGER_S = 30.0


def _registry_down(*args, **kwargs):
    (ROOT / "failed_at").write_text(str(time.time()))
    raise ConnectionError("the tracking server went away while logging the model")


if __name__ == "__main__":
    torch.set_num_threads(1)
    ROOT = root = Path(sys.argv[1])
    rank = os.environ["RANK"]
    failing = sys.argv[2:] == ["fail-logging"]
    if failing and rank == "0":
        lineage.log_model = _registry_down
    snapshot, spec = take_snapshot(str(root / "data")), make_spec(epochs=3)
    try:
        result = train(snapshot, spec, tracking_uri=f"sqlite:///{root}/mlflow.db")
    except Exception as exc:
        (root / f"rank{rank}.json").write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                                           "at": time.time()}))
        if rank == "0":  # a rank 0 slow to exit: the others must not wait for its process to end
            time.sleep(LINGER_S)
        raise
    (root / f"rank{rank}.json").write_text(result.model_dump_json())

"""What ctloop adds around a user's trainer: the digits example bare against the same function through ctloop.

    python bench/trainer_overhead.py [--reps 3] [--images 600] [--device cpu|cuda]

Bare: `digits_cnn.train.train` called directly with a hand-made TrainContext on the same local image files
and the same train/validation split ctloop would give it. Through ctloop: the runner as the train step calls
it (snapshot with a per-file digest, validation, file split and copy, the MLflow run on SQLite, model logging
with the package as code, load-back smoke test, holdout scoring), then the evaluate step's work (holdout
rebuilt, challenger loaded and scored by pyfunc). Repetitions alternate the two; medians and their ratio are
printed as JSON. The registry's SQLite database is created by an untimed first run (reported apart), as
it exists in real use. Torch runs on one thread (the benchmark host is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "digits_cnn"))

from digits_cnn.data import write_digits  # noqa: E402
from digits_cnn.train import train as digits_train  # noqa: E402

from ctloop import TrainContext  # noqa: E402
from ctloop.modelspec import ModelSpec  # noqa: E402
from ctloop.snapshot import materialize, take_snapshot  # noqa: E402
from ctloop.trainer.evaluate import evaluate, load_holdout  # noqa: E402
from ctloop.trainer.split import split_files  # noqa: E402
from ctloop.trainer.train import train  # noqa: E402
from ctloop.trainer.validation import validate  # noqa: E402


def bare(spec: ModelSpec, data: Path, work: Path, device: torch.device) -> float:
    snapshot = take_snapshot(str(data))  # outside the timing: only to hand the bare call the same split
    parts = split_files(snapshot, spec)
    train_files = materialize(snapshot, parts.train, work / "train")
    val_files = materialize(snapshot, parts.val, work / "val")
    ctx = TrainContext(params=spec.params, seed=spec.train.seed, device=device, output_dir=work, schema=spec.data,
                       train_files=tuple(train_files), train_labels=tuple(p.parent.name for p in train_files),
                       validation_files=tuple(val_files), validation_labels=tuple(p.parent.name for p in val_files))
    torch.manual_seed(spec.train.seed)
    start = time.perf_counter()
    digits_train(ctx)
    return time.perf_counter() - start


def through_ctloop(spec: ModelSpec, data: Path, work: Path, tracking_uri: str, device: str) -> tuple[float, float]:
    start = time.perf_counter()
    snapshot = take_snapshot(str(data))
    validate(snapshot, spec.data)
    run = train(snapshot, spec, tracking_uri=tracking_uri, device=device)
    trained = time.perf_counter()
    evaluate(run.model_uri, None, load_holdout(snapshot, spec, work / "holdout"), spec)
    return trained - start, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ModelSpec.model_validate_json((ROOT / "examples" / "digits_cnn" / "spec.json").read_text())
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-") as tmp:
        data = Path(tmp) / "digits"
        write_digits(data, count=args.images)
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        # the registry exists in real use: create its database (MLflow's migrations, seconds) before timing
        first = through_ctloop(spec, data, Path(tmp) / "warm-up", tracking_uri, args.device)[1]
        bare_s, train_s, total_s = [], [], []
        for rep in range(args.reps):
            bare_s.append(bare(spec, data, Path(tmp) / f"bare-{rep}", torch.device(args.device)))
            t, total = through_ctloop(spec, data, Path(tmp) / f"ctloop-{rep}", tracking_uri, args.device)
            train_s.append(t)
            total_s.append(total)
    b, t, total = (statistics.median(v) for v in (bare_s, train_s, total_s))
    print(json.dumps({
        "images": args.images, "device": args.device, "reps": args.reps, "epochs": spec.params["epochs"],
        "bare_s": round(b, 3), "ctloop_train_step_s": round(t, 3), "ctloop_train_and_evaluate_s": round(total, 3),
        "overhead_s": round(total - b, 3), "ratio": round(total / b, 2), "first_run_with_new_db_s": round(first, 3),
        "samples": {"bare": [round(v, 3) for v in bare_s], "ctloop": [round(v, 3) for v in total_s]},
    }, indent=2))


if __name__ == "__main__":
    main()

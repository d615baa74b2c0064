#!/usr/bin/env bash
# The trainer on one CUDA GPU: the bf16 path, then torchrun --nproc_per_node=1 through the DDP path,
# then (when MLflow is importable) an end-to-end train() twice with a SQLite tracking store under /tmp
# to check that the weight hash is reproducible on the GPU. Prints samples/s; about 3-5 minutes.
#
# Run from the repository root on the GPU machine:  bash bench/trainer_gpu.sh [OUT_DIR]
# It installs only what is missing (a CUDA torch that is already there is kept): torch numpy pandas
# pyarrow pydantic pydantic-settings, and mlflow for the end-to-end step. Without network it uses what
# is installed (or wheels in ./.whl) and skips what it lacks. Each step has a timeout; typical total ~3 min.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/ctloop-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CUBLAS_WORKSPACE_CONFIG=:4096:8
log() { printf '\n== %s\n' "$*"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PY=python3
# Inside a venv already (e.g. the image's torch venv): install what is missing right there, since a new
# venv's --system-site-packages would see the base interpreter's packages, not this venv's torch.
# A system interpreter (possibly externally managed) gets a venv that sees its packages instead.
if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    "$PY" -m venv --system-site-packages /tmp/ctloop-gpu-venv && PY=/tmp/ctloop-gpu-venv/bin/python
fi

need() {  # pip names whose import name (after the colon) is missing
    for spec in "$@"; do "$PY" -c "import ${spec#*:}" 2>/dev/null || printf '%s ' "${spec%%:*}"; done
}
install() {  # $1: seconds allowed, then pip names
    local seconds=$1; shift
    [ -z "$*" ] && return 0
    log "installing: $*"
    if [ -d .whl ]; then
        timeout "$seconds" "$PY" -m pip install -q --no-index --find-links .whl "$@" && return 0
    fi
    timeout "$seconds" "$PY" -m pip install -q "$@" || echo "could not install $* (no network?)"
}
install 150 $(need torch:torch numpy:numpy pandas:pandas pyarrow:pyarrow pydantic:pydantic \
               pydantic-settings:pydantic_settings)
install 90 $(need mlflow:mlflow sqlalchemy:sqlalchemy)
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

BENCH=(--device cuda --rows 200000 --epochs 3 --reps 5)
log "CUDA + bf16, batch 256 (the spec default)"
timeout 100 "$PY" bench/trainer.py "${BENCH[@]}" --batch-size 256 --json "$OUT/cuda_b256.json"
log "CUDA + bf16, batch 4096"
timeout 60 "$PY" bench/trainer.py "${BENCH[@]}" --batch-size 4096 --json "$OUT/cuda_b4096.json"
log "torchrun --nproc_per_node=1 through the DDP path (NCCL), batch 256"
timeout 100 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    bench/trainer.py "${BENCH[@]}" --batch-size 256 --ddp --json "$OUT/ddp_b256.json"

if "$PY" -c "import mlflow, sqlalchemy" 2>/dev/null; then
    log "end to end: train() twice on CUDA, SQLite tracking under /tmp"
    timeout 100 "$PY" - "$OUT" <<'PY'
import json, sys, tempfile, time
from pathlib import Path

import mlflow
import pandas as pd

from bench.trainer import synthetic
from ctloop.modelspec import DataSchema, Feature, ModelSpec, TrainParams
from ctloop.trainer.snapshot import take_snapshot
from ctloop.trainer.train import train

tmp = Path(tempfile.mkdtemp(prefix="ctloop-gpu-"))
(tmp / "data").mkdir()
synthetic(50_000, 16).to_parquet(tmp / "data" / "part-0.parquet", index=False)
features = tuple(Feature(name=f"x{i}") for i in range(16)) + (
    Feature(name="color", kind="categorical"), Feature(name="shop", kind="categorical"))
spec = ModelSpec(name="gpu", data=DataSchema(features=features, label="label", classes=(0, 1), key="id"),
                 train=TrainParams(epochs=5, batch_size=256, lr=1e-3))
snapshot = take_snapshot(str(tmp / "data"))
uri = f"sqlite:///{tmp}/mlflow.db"
runs = []
for _ in range(2):
    start = time.perf_counter()
    runs.append(train(snapshot, spec, tracking_uri=uri))
    print(f"train(): {time.perf_counter() - start:.1f} s, metrics {runs[-1].metrics}")
same = runs[0].weight_hash == runs[1].weight_hash and runs[0].metrics == runs[1].metrics
device = mlflow.MlflowClient(uri).get_run(runs[0].run_id).data.params["device"]
pred = mlflow.pyfunc.load_model(runs[0].model_uri).predict(pd.read_parquet(tmp / "data" / "part-0.parquet").head(3))
print(f"device param {device}; identical weight hash and metrics twice on the GPU: {same}; predicts {list(pred)}")
Path(sys.argv[1], "end_to_end.json").write_text(json.dumps(
    {"device": device, "reproducible": same, "weight_hash": runs[0].weight_hash, "metrics": runs[0].metrics}))
PY
else
    log "end to end skipped: mlflow (with sqlalchemy) is not importable here"
fi
log "figures in $OUT"
for f in "$OUT"/*.json; do [ -f "$f" ] && printf '%s: %s\n' "$(basename "$f")" "$(tr -d ' \n' < "$f")"; done
exit 0

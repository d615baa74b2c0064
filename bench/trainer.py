"""Samples/s of the trainer's training loop against a bare torch loop, same data and model, one run.

    python bench/trainer.py                      # CPU
    python bench/trainer.py --device cuda        # CUDA + bf16 autocast
    torchrun --nproc_per_node=1 bench/trainer.py --device cuda --ddp   # through the DDP path

Both sides train the same MLP (same seed, same initial weights) on the same encoded tensors, resident
on the device, for the same epochs and batch size. The trainer side is `ctloop.trainer.loop.fit` as `train()`
runs it: deterministic algorithms, DistributedSampler shuffling, validation loss and a checkpoint each
epoch, early stopping bookkeeping (patience set so that every epoch runs). The bare side is the
textbook loop: randperm, slice, forward, backward, step. Repetitions alternate the two sides; medians
of samples/s (training rows x epochs / wall seconds) and their ratio are printed, and the same per
CPU-second of this process, which other tenants of a shared host disturb less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctloop.modelspec import DataSchema, Feature, ModelSpec, TrainParams
from ctloop.trainer import distributed
from ctloop.trainer.loop import Tensors, autocast, deterministic, fit
from ctloop.trainer.model import Encoder, build_module, loss_fn, model_output
from ctloop.trainer.split import split_frame


def synthetic(rows: int, numeric: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, numeric))
    color = rng.choice([f"c{i}" for i in range(12)], size=rows)
    shop = rng.choice([f"s{i}" for i in range(50)], size=rows)
    signal = x[:, : numeric // 2].sum(axis=1) - x[:, numeric // 2 :].sum(axis=1) + (color == "c3")
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(numeric)])
    return frame.assign(color=color, shop=shop, label=(signal > 0).astype(int), id=np.arange(rows))


def make_spec(args: argparse.Namespace) -> ModelSpec:
    features = [Feature(name=f"x{i}") for i in range(args.numeric)]
    features += [Feature(name="color", kind="categorical"), Feature(name="shop", kind="categorical")]
    return ModelSpec(
        name="bench",
        data=DataSchema(features=tuple(features), label="label", task="binary", classes=(0, 1), key="id"),
        train=TrainParams(hidden=tuple(args.hidden), epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                          patience=args.epochs + 1, seed=0),
    )


def bare_loop(module: torch.nn.Module, data: Tensors, spec: ModelSpec, device: torch.device) -> None:
    params = spec.train
    criterion = loss_fn("binary")
    optimizer = torch.optim.AdamW(module.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    module.train()
    for _ in range(params.epochs):
        order = torch.randperm(len(data), generator=generator).to(device)
        for start in range(0, len(order), params.batch_size):
            rows = order[start:start + params.batch_size]
            with autocast(device):
                out = module(data.x_num[rows], data.x_cat[rows])
            loss = criterion(model_output("binary", out.float()), data.y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--ddp", action="store_true", help="under torchrun: wrap in DDP even at world size 1")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--numeric", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads; 0 keeps torch's default (pass 1 on a shared, oversubscribed host)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    requested = torch.device(args.device)
    ctx = distributed.start(requested, force=args.ddp)
    device = distributed.select_device(None, ctx) if requested.type == "cuda" else requested
    spec = make_spec(args)
    parts = split_frame(synthetic(args.rows, args.numeric), spec)
    encoder = Encoder.fit(parts.train, spec.data)

    def tensors(frame: pd.DataFrame) -> Tensors:
        return Tensors(*encoder.features(frame), encoder.targets(frame["label"])).to(device)

    train, val = tensors(parts.train), tensors(parts.val)
    samples = len(train) * args.epochs // ctx.world_size
    figures: dict[str, list[float]] = {"trainer": [], "bare": [], "trainer_cpu": [], "bare_cpu": []}

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_module(encoder, spec.train.hidden).to(device)

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps + 1):  # the first repetition warms up allocators and kernels, unrecorded
            for side in ("trainer", "bare") if rep % 2 == 0 else ("bare", "trainer"):
                module = fresh()
                sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                if side == "trainer":
                    with deterministic(spec.train.seed):
                        fit(distributed.wrap(module, ctx, device), train, val, spec.train, "binary",
                            device=device, ctx=ctx, checkpoint_dir=Path(tmp), fingerprint=f"rep{rep}")
                else:
                    bare_loop(module, train, spec, device)
                sync(device)
                if rep:
                    figures[side].append(samples / (time.perf_counter() - start))
                    figures[f"{side}_cpu"].append(samples / (time.process_time() - cpu_start))
    distributed.stop(ctx)
    if not ctx.is_main:
        return
    median = {side: statistics.median(values) for side, values in figures.items()}
    trainer_sps, bare_sps = median["trainer"], median["bare"]
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "ddp": ctx.active, "world_size": ctx.world_size, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "train_rows": len(train), "epochs": args.epochs,
        "batch_size": args.batch_size, "hidden": args.hidden, "reps": args.reps,
        "trainer_samples_per_s": round(trainer_sps), "bare_samples_per_s": round(bare_sps),
        "ratio": round(trainer_sps / bare_sps, 3),
        "trainer_samples_per_cpu_s": round(median["trainer_cpu"]), "bare_samples_per_cpu_s": round(median["bare_cpu"]),
        "cpu_ratio": round(median["trainer_cpu"] / median["bare_cpu"], 3),
        "trainer_runs": [round(v) for v in figures["trainer"]], "bare_runs": [round(v) for v in figures["bare"]],
    }
    print(f"device {result['device']}  ddp={ctx.active}  train rows {len(train)}  epochs {args.epochs}  "
          f"batch {args.batch_size}  reps {args.reps}")
    print(f"trainer loop  median {trainer_sps:12,.0f} samples/s   runs {result['trainer_runs']}")
    print(f"bare torch    median {bare_sps:12,.0f} samples/s   runs {result['bare_runs']}")
    print(f"ratio trainer/bare: {result['ratio']:.3f} (wall clock)")
    print(f"per CPU-second of this process: trainer {median['trainer_cpu']:,.0f}, bare {median['bare_cpu']:,.0f}, "
          f"ratio {result['cpu_ratio']:.3f} (steadier than wall clock on a shared host)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The training loop: shuffled mini-batches over in-memory tensors, early stopping, per-epoch checkpoints.

The data lives on the training device as whole tensors and batches are index slices of them, so the
loop adds little over a bare torch loop. Shuffling is DistributedSampler's (seed + epoch), which makes
an epoch's order a pure function of the seed, identical whether or not training resumed from a
checkpoint, and shards it across ranks under DDP.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ctloop.modelspec import TrainParams
from ctloop.trainer.distributed import DistContext
from ctloop.trainer.model import loss_fn, model_output

EVAL_BATCH = 8192
SINGLE_PROCESS = DistContext()

# cuBLAS reads this when its handle is created, i.e. at the process's first CUDA matmul, which may come
# before any training starts; without it deterministic mode refuses cuBLAS calls.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class Tensors:
    x_num: torch.Tensor
    x_cat: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> Tensors:
        return Tensors(self.x_num.to(device), self.x_cat.to(device), self.y.to(device))


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float


@dataclass
class FitResult:
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed every RNG and force deterministic kernels for the duration, then restore the global flag."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU, where bf16 matmuls are slower than fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Rows(torch.utils.data.Dataset):
    """Only a length, so DistributedSampler can hand out row indices into the in-memory tensors."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def fit(
    module: nn.Module,
    train: Tensors,
    val: Tensors,
    params: TrainParams,
    task: str,
    *,
    device: torch.device,
    ctx: DistContext = SINGLE_PROCESS,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
) -> FitResult:
    """Train `module` in place and leave it holding the weights of the best validation epoch.

    A checkpoint in `checkpoint_dir` with the same `fingerprint` (data + spec) is resumed from, so a
    retried step continues where it stopped and ends with the same weights as an uninterrupted run.
    """
    train, val = train.to(device), val.to(device)
    criterion = loss_fn(task)
    optimizer = torch.optim.AdamW(module.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    sampler = DistributedSampler(_Rows(len(train)), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=params.seed)
    result = FitResult()
    best_state = _copy_state(module)
    bad_epochs = 0
    checkpoint = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            module.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            best_state, bad_epochs = saved["best_state"], saved["bad_epochs"]
            result = FitResult([EpochStats(**h) for h in saved["history"]], saved["best_epoch"],
                               saved["best_val_loss"])
    for epoch in range(result.epochs_run, params.epochs):
        if bad_epochs >= params.patience:
            result.stopped_early = True
            break
        sampler.set_epoch(epoch)
        train_loss = _train_epoch(module, train, sampler, optimizer, criterion, task, params.batch_size, device)
        val_loss = evaluate_loss(module, val, criterion, task, device)
        result.history.append(EpochStats(epoch, train_loss, val_loss))
        score = val_loss if len(val) else train_loss  # a tiny dataset may leave no validation rows
        if score < result.best_val_loss:
            result.best_epoch, result.best_val_loss, bad_epochs = epoch, score, 0
            best_state = _copy_state(module)
        else:
            bad_epochs += 1
        if checkpoint is not None and ctx.is_main:
            _save_checkpoint(checkpoint, fingerprint, module, optimizer, best_state, bad_epochs, result)
    module.load_state_dict(best_state)
    return result


def _train_epoch(module, train, sampler, optimizer, criterion, task, batch_size, device) -> float:
    module.train()
    order = torch.tensor(list(iter(sampler)), dtype=torch.int64, device=device)
    total = torch.zeros((), device=device)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with autocast(device):
            out = module(train.x_num[rows], train.x_cat[rows])
        loss = criterion(model_output(task, out.float()), train.y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total.add_(loss.detach(), alpha=len(rows))  # stays on the device: no sync per step
    return float(total) / max(len(order), 1)


@torch.no_grad()
def evaluate_loss(module: nn.Module, data: Tensors, criterion: nn.Module, task: str, device: torch.device) -> float:
    if len(data) == 0:
        return float("nan")
    module.eval()
    total = torch.zeros((), device=device)
    for start in range(0, len(data), EVAL_BATCH):
        stop = start + EVAL_BATCH
        with autocast(device):
            out = module(data.x_num[start:stop], data.x_cat[start:stop])
        total += criterion(model_output(task, out.float()), data.y[start:stop]) * len(data.y[start:stop])
    return float(total) / len(data)


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _save_checkpoint(path, fingerprint, module, optimizer, best_state, bad_epochs, result: FitResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({
        "fingerprint": fingerprint,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_state": best_state,
        "bad_epochs": bad_epochs,
        "history": [vars(h) for h in result.history],
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
    }, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a torn checkpoint

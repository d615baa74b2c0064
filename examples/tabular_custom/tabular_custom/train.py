"""The trainer ctloop calls (`"trainer": "tabular_custom.train:train"`): a residual MLP trained with a focal
loss, returned as an `mlflow.pyfunc.PythonModel` that carries its own preprocessing."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn

from ctloop import TrainContext, TrainResult
from tabular_custom.data import CATEGORICAL, NUMERIC, PLANS


class ChurnNet(nn.Module):
    def __init__(self, inputs: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.block(h)).squeeze(-1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Down-weights easy examples, so the minority class (leavers) counts for more."""
    p = torch.sigmoid(logits)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = p * target + (1 - p) * (1 - target)
    return ((1 - p_true) ** gamma * bce).mean()


class Features:
    """Standardised numeric columns and a one-hot plan, with statistics from the training rows."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.mean = frame[NUMERIC].mean().to_numpy()
        self.std = frame[NUMERIC].std().replace(0, 1).to_numpy()

    def __call__(self, frame: pd.DataFrame) -> torch.Tensor:
        numeric = (frame[NUMERIC].to_numpy(dtype=float) - self.mean) / self.std
        plans = np.stack([(frame[CATEGORICAL[0]] == p).to_numpy(dtype=float) for p in PLANS], axis=1)
        return torch.tensor(np.concatenate([numeric, plans], axis=1), dtype=torch.float32)


class ChurnModel(mlflow.pyfunc.PythonModel):
    """Raw columns in; 0/1 out, or probabilities of each class for params={"output": "proba"}."""

    def __init__(self, features: Features, net: ChurnNet) -> None:
        self.features = features
        self.net = net

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        self.net.eval()
        with torch.no_grad():
            p = torch.sigmoid(self.net(self.features(model_input))).numpy()
        if (params or {}).get("output") == "proba":
            return pd.DataFrame({"0": 1 - p, "1": p})
        return (p >= 0.5).astype(int)


def train(ctx: TrainContext) -> TrainResult:
    assert ctx.train is not None and ctx.validation is not None  # a table dataset
    features = Features(ctx.train)
    x, y = features(ctx.train).to(ctx.device), torch.tensor(ctx.train["churned"].to_numpy(), dtype=torch.float32)
    y = y.to(ctx.device)
    net = ChurnNet(x.shape[1], int(ctx.params.get("width", 32))).to(ctx.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(ctx.params.get("lr", 0.01)))
    gamma, batch = float(ctx.params.get("gamma", 2.0)), int(ctx.params.get("batch_size", 128))
    for epoch in range(int(ctx.params.get("epochs", 20))):
        net.train()
        order = torch.randperm(len(x), device=ctx.device)
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad()
            loss = focal_loss(net(x[rows]), y[rows], gamma)
            loss.backward()
            optimizer.step()
        ctx.log_metric("train_focal_loss", loss.item(), step=epoch)
    example = ctx.train[NUMERIC + CATEGORICAL].head(5).reset_index(drop=True)
    return TrainResult(model=ChurnModel(features, net.cpu()), input_example=example,
                       predict_params={"output": "label"})

"""The trainer ctloop calls (`"trainer": "digits_cnn.train:train"`): a small CNN, returned as a torch module."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ctloop import TrainContext, TrainResult
from digits_cnn.data import PIXELS, load_images

CLASSES = [str(d) for d in range(10)]


class DigitsCNN(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels * 4 * 4, len(CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def as_tensor(frame: pd.DataFrame) -> torch.Tensor:
    return torch.tensor(frame[PIXELS].to_numpy(), dtype=torch.float32).reshape(-1, 1, 8, 8)


def predict(module: DigitsCNN, model_input: pd.DataFrame, params: dict | None = None):
    """Labels by default; one probability column per digit for params={"output": "proba"}."""
    module.eval()
    logits = module(as_tensor(model_input))
    if (params or {}).get("output") == "proba":
        return pd.DataFrame(torch.softmax(logits, dim=1).numpy(), columns=CLASSES)
    return logits.argmax(dim=1).numpy()


def train(ctx: TrainContext) -> TrainResult:
    epochs = int(ctx.params.get("epochs", 15))
    batch_size = int(ctx.params.get("batch_size", 64))
    x = as_tensor(load_images(ctx.train_files)).to(ctx.device)
    y = torch.tensor([int(label) for label in ctx.train_labels], device=ctx.device)
    val_x = as_tensor(load_images(ctx.validation_files)).to(ctx.device)
    val_y = torch.tensor([int(label) for label in ctx.validation_labels], device=ctx.device)
    model = DigitsCNN(int(ctx.params.get("channels", 16))).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 0.01)))
    loss_fn = nn.CrossEntropyLoss()
    val_accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=ctx.device)  # seeded by ctloop: the same order every run
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
        if len(val_y):
            model.eval()
            with torch.no_grad():
                val_accuracy = float((model(val_x).argmax(dim=1) == val_y).float().mean())
            ctx.log_metrics({"train_loss": loss.item(), "val_accuracy": val_accuracy}, step=epoch)
    return TrainResult(
        model=model.cpu(),
        predict=predict,
        input_example=load_images(ctx.train_files[:5]),
        predict_params={"output": "label"},
        metrics={"val_accuracy": val_accuracy},
    )

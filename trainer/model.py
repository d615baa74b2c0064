"""The tabular model: a fitted encoder (normalisation, category vocabularies) and a torch MLP.

The encoder is fitted on the training split only. Numeric features are standardised with missing
values imputed at the training mean; each categorical feature is an index into its training
vocabulary (0 for unseen or missing) feeding a learned embedding. Classification heads output one
logit per class; regression predicts the standardised target.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ctloop.modelspec import DataSchema
from ctloop.trainer.labels import class_list, label_keys

MAX_CATEGORIES = 1000


class Encoder(BaseModel):
    """Everything needed to turn raw feature columns (and labels) into tensors, fitted on training rows."""

    model_config = ConfigDict(frozen=True)

    task: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    vocab: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...] = ()
    class_values: tuple[bool | int | float | str, ...] = ()
    """The labels predictions are spelled in: as declared in the schema, else as found in the data."""
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: DataSchema) -> Encoder:
        means, stds = [], []
        for column in schema.numeric:
            values = frame[column].to_numpy(dtype=np.float64)
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
            std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
            means.append(mean)
            stds.append(std if std > 1e-12 else 1.0)
        vocab = []
        for column in schema.categorical:
            counts = _category_keys(frame[column]).dropna().value_counts()
            top = counts.sort_index().sort_values(ascending=False, kind="stable").index[:MAX_CATEGORIES]
            vocab.append(tuple(sorted(top)))
        target = {}
        if schema.task == "regression":
            y = frame[schema.label].to_numpy(dtype=np.float64)
            target = {"target_mean": float(y.mean()), "target_std": float(y.std()) or 1.0}
        classes: tuple[str, ...] = ()
        values: tuple[bool | int | float | str, ...] = ()
        if schema.task != "regression":
            classes = class_list(schema, frame[schema.label])
            seen = dict(zip(label_keys(frame[schema.label]), frame[schema.label], strict=True))
            declared = dict(zip(classes, schema.classes or (), strict=False))
            values = tuple(_plain(declared.get(k, seen.get(k, k))) for k in classes)
        return cls(task=schema.task, numeric=tuple(schema.numeric), categorical=tuple(schema.categorical),
                   means=tuple(means), stds=tuple(stds), vocab=tuple(vocab), classes=classes,
                   class_values=values, **target)

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.task != "regression" else 1

    def features(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """(numeric float32 [n, numeric], categorical int64 [n, categorical]) for the rows of `frame`."""
        n = len(frame)
        x_num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, column in enumerate(self.numeric):
            values = (pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64) - self.means[j])
            values /= self.stds[j]
            x_num[:, j] = np.where(np.isfinite(values), values, 0.0)
        x_cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            codes = pd.Categorical(_category_keys(frame[column]), categories=self.vocab[j]).codes
            x_cat[:, j] = codes.astype(np.int64) + 1
        return torch.from_numpy(x_num), torch.from_numpy(x_cat)

    def targets(self, labels: pd.Series) -> torch.Tensor:
        if self.task == "regression":
            y = (labels.to_numpy(dtype=np.float64) - self.target_mean) / self.target_std
            return torch.from_numpy(y.astype(np.float32))
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[k] for k in label_keys(labels)], dtype=torch.int64)


def _plain(value: object) -> bool | int | float | str:
    return value.item() if isinstance(value, np.generic) else value  # type: ignore[return-value]


def _category_keys(column: pd.Series) -> pd.Series:
    keys = label_keys(column) if column.dtype.kind == "f" else column.astype(str)
    return keys.where(column.notna())


class TabularMLP(nn.Module):
    def __init__(self, numeric: int, cardinalities: tuple[int, ...], hidden: tuple[int, ...], outputs: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c + 1, min(16, (c + 2) // 2)) for c in cardinalities)
        width = numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num, *(emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings))]
        return self.mlp(torch.cat(parts, dim=1) if len(parts) > 1 else x_num)


def build_module(encoder: Encoder, hidden: tuple[int, ...]) -> TabularMLP:
    return TabularMLP(len(encoder.numeric), tuple(len(v) for v in encoder.vocab), hidden, encoder.outputs)


def loss_fn(task: str) -> nn.Module:
    return nn.MSELoss() if task == "regression" else nn.CrossEntropyLoss()


def model_output(task: str, out: torch.Tensor) -> torch.Tensor:
    return out.squeeze(-1) if task == "regression" else out


def weight_hash(module: nn.Module, encoder: Encoder) -> str:
    """sha256 over the encoder and every parameter's bytes in name order: equal iff the models are."""
    h = hashlib.sha256(encoder.model_dump_json().encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class TabularModel:
    """A trained model ready to predict from raw feature columns; what the MLflow pyfunc wraps."""

    encoder: Encoder
    hidden: tuple[int, ...]
    module: TabularMLP

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"encoder": self.encoder.model_dump(mode="json"), "hidden": list(self.hidden)}
        (directory / "model.json").write_text(json.dumps(meta, indent=2))
        torch.save({k: v.detach().cpu() for k, v in self.module.state_dict().items()}, directory / "weights.pt")

    @classmethod
    def load(cls, directory: Path) -> TabularModel:
        meta = json.loads((directory / "model.json").read_text())
        encoder = Encoder.model_validate(meta["encoder"])
        hidden = tuple(meta["hidden"])
        module = build_module(encoder, hidden)
        module.load_state_dict(torch.load(directory / "weights.pt", map_location="cpu", weights_only=True))
        return cls(encoder, hidden, module.eval())

    @torch.no_grad()
    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities [n, classes] for classification, predictions [n] for regression."""
        self.module.eval()
        device = next(self.module.parameters()).device
        x_num, x_cat = self.encoder.features(frame)
        out = self.module(x_num.to(device), x_cat.to(device)).float().cpu()
        if self.encoder.task == "regression":
            return out.squeeze(-1).numpy().astype(np.float64) * self.encoder.target_std + self.encoder.target_mean
        return torch.softmax(out, dim=1).numpy().astype(np.float64)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        raw = self.raw(frame)
        if self.encoder.task == "regression":
            return raw
        return np.asarray(self.encoder.class_values, dtype=object)[raw.argmax(axis=1)]

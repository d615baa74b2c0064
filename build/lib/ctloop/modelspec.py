"""What a model is trained on and how it is judged: the per-model spec every step reads.

Specs are JSON files under `<home>/specs/<name>.json` (a ConfigMap mounted at home in a cluster).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ctloop.settings import Settings


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Feature(Frozen):
    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical"] = "numeric"


class DataSchema(Frozen):
    """The declared shape of a dataset, checked by validation before any training."""

    features: tuple[Feature, ...] = Field(min_length=1)
    label: str
    task: Literal["binary", "multiclass", "regression"] = "binary"
    classes: tuple[str | int, ...] | None = None
    key: str | None = None
    min_rows: int = Field(default=50, ge=1)
    max_nan_share: float = Field(default=0.1, ge=0.0, le=1.0)

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class TrainParams(Frozen):
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-2, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    patience: int = Field(default=5, ge=1)
    seed: int = 0
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    val_share: float = Field(default=0.1, gt=0, lt=1)


class Guardrail(Frozen):
    """A metric that may not get worse than the champion's by more than `tolerance`."""

    metric: str
    direction: Literal["max", "min"] = "max"
    tolerance: float = Field(default=0.0, ge=0)


class PromotionPolicy(Frozen):
    metric: str = "accuracy"
    direction: Literal["max", "min"] = "max"
    min_improvement: float = Field(default=0.0, ge=0)
    guardrails: tuple[Guardrail, ...] = ()


class ModelSpec(Frozen):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataSchema
    # Where labelled recent data for this model lands (a prefix); a drift-triggered run retrains
    # on it. Prediction windows carry no labels, so they cannot be trained on themselves.
    retrain_uri: str | None = None
    train: TrainParams = TrainParams()
    policy: PromotionPolicy = PromotionPolicy()

    @model_validator(mode="after")
    def _label_not_a_feature(self) -> ModelSpec:
        if self.data.label in self.data.feature_names:
            raise ValueError(f"label column {self.data.label!r} is also listed as a feature")
        return self


class SpecNotFound(LookupError):
    pass


def spec_path(name: str, settings: Settings):
    return settings.home / "specs" / f"{name}.json"


def save_spec(spec: ModelSpec, settings: Settings) -> None:
    path = spec_path(spec.name, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json(indent=2))


def load_spec(name: str, settings: Settings) -> ModelSpec:
    path = spec_path(name, settings)
    if not path.is_file():
        raise SpecNotFound(f"no spec for model {name!r}: expected {path}")
    return ModelSpec.model_validate_json(path.read_text())

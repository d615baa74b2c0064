"""The demo's story: a small tabular classification stream whose plot is known in advance.

A subscription service predicts whether a customer renews. Data arrives in labelled batches:
a bootstrap batch, then a burst of batches (one of them with garbled labels). Clients then send
serving traffic, window after window, and part-way through the customer base changes: usage rises,
the plan mix shifts and heavy users now *leave* instead of staying. A model trained before the
change is worse on recent traffic than one trained on recent traffic, once its labels are known.

Everything here is pure: the same `StoryConfig` always gives the same frames, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ctloop.modelspec import BakeRule, DataSchema, Feature, ModelSpec, PromotionPolicy, TrainParams

Phase = Literal["before", "after"]

MODEL = "renewals"
LABEL = "renewed"
NUMERIC = ("usage_hours", "tenure_months", "support_tickets")
CATEGORICAL = ("plan", "region")
PLANS = ("basic", "plus", "pro")
REGIONS = ("north", "south", "east", "west")


@dataclass(frozen=True)
class Concept:
    """How features are distributed and how the label depends on them, in one phase of the story."""

    usage_mean: float
    plan_probs: tuple[float, float, float]
    usage_weight: float
    plan_weights: tuple[float, float, float]
    tenure_shape: float = 2.0
    tickets_rate: float = 1.0
    tenure_weight: float = 0.8
    tickets_weight: float = -0.9
    noise: float = 0.35


BEFORE = Concept(usage_mean=0.0, plan_probs=(0.5, 0.3, 0.2), usage_weight=1.6, plan_weights=(-0.6, 0.2, 0.8))
# After the change newer, heavier users arrive and churn, and the plan effect reverses: the label
# relationship moves, not just the inputs, so retraining on recent data is the way back to accuracy.
# Most columns shift, so the monitor's dataset-level rule (half the columns drifted) fires.
AFTER = Concept(usage_mean=1.5, plan_probs=(0.15, 0.3, 0.55), usage_weight=-1.6, plan_weights=(0.7, 0.1, -0.7),
                tenure_shape=1.0, tickets_rate=2.0)


@dataclass(frozen=True)
class StoryConfig:
    model: str = MODEL
    seed: int = 7
    bootstrap_rows: int = 1200
    burst_batches: int = 3
    burst_rows: int = 400
    noisy_batch: int = 2
    """Which burst batch (0-based within the burst) has garbled labels."""
    noisy_share: float = 0.6
    traffic_windows_before: int = 2
    traffic_windows_after: int = 2
    traffic_rows: int = 600
    epochs: int = 8
    min_improvement: float = 0.03
    """Policy: a challenger must beat the champion's accuracy by this much to be promoted."""

    def __post_init__(self) -> None:
        for name in ("bootstrap_rows", "burst_rows", "traffic_rows", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"StoryConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.burst_batches < 1:
            raise ValueError(f"StoryConfig.burst_batches must be at least 1, got {self.burst_batches}")
        if not 0 <= self.noisy_batch < self.burst_batches:
            raise ValueError(f"StoryConfig.noisy_batch must be in [0, {self.burst_batches}), got {self.noisy_batch}")
        if not 0.0 <= self.noisy_share <= 1.0:
            raise ValueError(f"StoryConfig.noisy_share must be in [0, 1], got {self.noisy_share}")


@dataclass(frozen=True, eq=False)
class Batch:
    """A labelled batch of training data that lands in the object store."""

    name: str
    stage: Literal["bootstrap", "burst"]
    phase: Phase
    noisy_labels: bool
    frame: pd.DataFrame = field(repr=False)


@dataclass(frozen=True, eq=False)
class TrafficWindow:
    """Rows that clients send to serving, one monitor window's worth. Clients send the features only;
    the label is the ground truth that becomes known later (what a labelling job would join)."""

    name: str
    phase: Phase
    frame: pd.DataFrame = field(repr=False)

    @property
    def features(self) -> pd.DataFrame:
        return self.frame[[*NUMERIC, *CATEGORICAL]]


@dataclass(frozen=True, eq=False)
class Story:
    config: StoryConfig
    spec: ModelSpec
    bootstrap: Batch
    burst: tuple[Batch, ...]
    traffic_before: tuple[TrafficWindow, ...]
    traffic_after: tuple[TrafficWindow, ...]

    @property
    def batches(self) -> tuple[Batch, ...]:
        return (self.bootstrap, *self.burst)

    @property
    def traffic(self) -> tuple[TrafficWindow, ...]:
        return (*self.traffic_before, *self.traffic_after)


def model_spec(config: StoryConfig) -> ModelSpec:
    return ModelSpec(
        name=config.model,
        data=DataSchema(
            features=(
                *(Feature(name=n, kind="numeric") for n in NUMERIC),
                *(Feature(name=n, kind="categorical") for n in CATEGORICAL),
            ),
            label=LABEL,
            task="binary",
            classes=(0, 1),
            key="row_id",
            min_rows=100,
        ),
        train=TrainParams(hidden=(32, 16), epochs=config.epochs, batch_size=128, lr=1e-2, patience=3, seed=0),
        policy=PromotionPolicy(metric="accuracy", direction="max", min_improvement=config.min_improvement,
                               bake=BakeRule(window="10m", min_rows=max(1, config.traffic_rows // 3),
                                             tolerance=0.02)),
    )


def build_story(config: StoryConfig | None = None) -> Story:
    config = config or StoryConfig()
    # One child generator per part, so changing the size of one part leaves the others unchanged.
    seeds = np.random.SeedSequence(config.seed).spawn(3 + config.burst_batches)
    rngs = [np.random.default_rng(s) for s in seeds]
    next_id = _RowIds()

    bootstrap = Batch("batch-000", "bootstrap", "before", False,
                      labelled_rows(rngs[0], BEFORE, config.bootstrap_rows, next_id))
    burst = []
    for i in range(config.burst_batches):
        noisy = i == config.noisy_batch
        frame = labelled_rows(rngs[1 + i], BEFORE, config.burst_rows, next_id)
        if noisy:
            frame = garble_labels(rngs[1 + i], frame, config.noisy_share)
        burst.append(Batch(f"batch-{1 + i:03d}", "burst", "before", noisy, frame))
    base = 1 + config.burst_batches
    before = tuple(
        TrafficWindow(f"traffic-before-{i}", "before",
                      labelled_rows(rngs[base], BEFORE, config.traffic_rows, next_id))
        for i in range(config.traffic_windows_before)
    )
    after = tuple(
        TrafficWindow(f"traffic-after-{i}", "after",
                      labelled_rows(rngs[base + 1], AFTER, config.traffic_rows, next_id))
        for i in range(config.traffic_windows_after)
    )
    return Story(config, model_spec(config), bootstrap, tuple(burst), before, after)


class _RowIds:
    """Row keys unique across the whole story, so a split by key never mixes batches up."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + n)
        self.next += n
        return ids


def feature_rows(rng: np.random.Generator, concept: Concept, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "usage_hours": np.round(rng.normal(concept.usage_mean, 1.0, n), 4),
        "tenure_months": np.round(rng.gamma(concept.tenure_shape, 1.0, n), 4),
        "support_tickets": rng.poisson(concept.tickets_rate, n).astype("float64"),
        "plan": rng.choice(PLANS, size=n, p=concept.plan_probs),
        "region": rng.choice(REGIONS, size=n),
    })


def label_logits(frame: pd.DataFrame, concept: Concept) -> np.ndarray:
    """The true (noise-free) score of renewing under `concept`."""
    plan_effect = frame["plan"].map(dict(zip(PLANS, concept.plan_weights, strict=True))).to_numpy(dtype="float64")
    tenure = (frame["tenure_months"].to_numpy() - 2.0) / 1.4
    tickets = frame["support_tickets"].to_numpy() - 1.0
    usage = frame["usage_hours"].to_numpy() - concept.usage_mean
    return (concept.usage_weight * usage + concept.tenure_weight * tenure
            + concept.tickets_weight * tickets + plan_effect)


def labelled_rows(rng: np.random.Generator, concept: Concept, n: int, ids: _RowIds) -> pd.DataFrame:
    frame = feature_rows(rng, concept, n)
    logits = label_logits(frame, concept) + rng.normal(0.0, concept.noise, n)
    frame[LABEL] = (logits > 0).astype("int64")
    frame.insert(0, "row_id", ids.take(n))
    return frame


def garble_labels(rng: np.random.Generator, frame: pd.DataFrame, share: float) -> pd.DataFrame:
    """Replace `share` of the labels with coin flips: a batch from a broken labelling job."""
    out = frame.copy()
    hit = rng.random(len(out)) < share
    out.loc[hit, LABEL] = rng.integers(0, 2, int(hit.sum()))
    return out

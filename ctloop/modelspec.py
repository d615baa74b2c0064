"""What a model is trained on and how it is judged: the per-model spec every step reads.

Specs are JSON files under `<home>/specs/<name>.json` (a ConfigMap mounted at home in a cluster).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctloop.cron import Cron, parse_interval, schedule_ticks, zone
from ctloop.failures import Refused
from ctloop.settings import Settings

# Model names reach Workflow names through a lowercase slug computed by Python locally and by Go (sprig
# `lower`) in the cluster; the two lowercase non-ASCII letters differently (`İ` is "i̇" in Python, "i" in Go),
# so a name is restricted to characters both treat alike. Event payloads naming a model are held to the
# same rule by the sensors' filters (`ctloop.sensors.catalog`), which spell it as these two regexes.
MODEL_NAME_RULE = "ASCII letters, digits, '_', '.' and '-', starting with a letter or digit"
MODEL_NAME_START = "^[A-Za-z0-9]"
MODEL_NAME_OUTSIDE = "[^A-Za-z0-9_.-]"


class ModelNameError(ValueError):
    """A model name breaking `MODEL_NAME_RULE`; the message names the rule and the offending character."""


def check_model_name(name: str) -> str:
    """`name` when it follows `MODEL_NAME_RULE`, else `ModelNameError`."""
    if not re.match(MODEL_NAME_START, name):
        raise ModelNameError(f"model name {name!r} must start with an ASCII letter or digit "
                             f"(model names are {MODEL_NAME_RULE})")
    bad = re.search(MODEL_NAME_OUTSIDE, name)
    if bad:
        raise ModelNameError(f"model name {name!r} contains {bad.group()!r} (U+{ord(bad.group()):04X}); "
                             f"model names are {MODEL_NAME_RULE}")
    return name


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Feature(Frozen):
    name: str
    kind: Literal["numeric", "categorical"] = "numeric"


CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "pr_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PINNED_IMAGE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def check_reference(value: str, what: str) -> str:
    """A `package.module:function` reference, checked for shape here and imported where it is used."""
    if not _REFERENCE.match(value):
        raise ValueError(f"{what} {value!r} is not a 'package.module:function' reference")
    return value


class DataSchema(Frozen):
    """The declared shape of a dataset, checked by validation before any training.

    `kind="table"` (default): .parquet/.csv files with the declared feature and label columns.
    `kind="files"`: any other file dataset (images, arrays, ...); a file's label is its parent directory's
    name, and `inputs` names the user function that turns a list of local file paths into the model's input
    (ctloop calls it to score the held-out files).
    """

    kind: Literal["table", "files"] = "table"
    features: tuple[Feature, ...] = ()
    label: str = ""
    inputs: str | None = None
    task: Literal["binary", "multiclass", "regression"] = "binary"
    classes: tuple[str | int, ...] | None = None
    key: str | None = None
    min_rows: int = Field(default=50, ge=1)
    max_nan_share: float = Field(default=0.1, ge=0.0, le=1.0)

    @field_validator("inputs")
    @classmethod
    def _inputs_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value, "data.inputs")

    @model_validator(mode="after")
    def _kind_needs(self) -> DataSchema:
        if self.kind == "table" and (not self.features or not self.label):
            raise ValueError("a table dataset needs 'features' (at least one) and a 'label' column")
        if self.kind == "files":
            if self.inputs is None:
                raise ValueError("a files dataset needs 'inputs': the 'package.module:function' that turns a list "
                                 "of file paths into the model's input")
            if self.task == "regression":
                raise ValueError("a files dataset takes its labels from directory names: binary or multiclass only")
        return self

    @property
    def metric_names(self) -> tuple[str, ...]:
        return REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS

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


class BakeRule(Frozen):
    """After a promotion, for `window` (a duration like '1h'): the new champion's live `metric` (default: the
    policy's) is compared with the previous champion's, scored in shadow on the same labelled requests; once
    `min_rows` such rows show the champion worse by more than `tolerance`, it is rolled back."""

    window: str = "1h"
    min_rows: int = Field(default=200, ge=1)
    metric: str | None = None
    tolerance: float = Field(default=0.0, ge=0)

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        parse_interval(value)
        return value

    @property
    def window_s(self) -> float:
        return parse_interval(self.window)


class PromotionPolicy(Frozen):
    metric: str = "accuracy"
    direction: Literal["max", "min"] = "max"
    min_improvement: float = Field(default=0.0, ge=0)
    guardrails: tuple[Guardrail, ...] = ()
    bake: BakeRule | None = None
    """A bake window after each promotion, with automatic rollback (`ctloop.monitors.bake`)."""

    @property
    def bake_metric(self) -> str | None:
        return None if self.bake is None else self.bake.metric or self.metric


class Schedule(Frozen):
    """Retrain on a calendar: a five-field cron expression in an IANA time zone, or a fixed interval.

    Each tick snapshots `data_uri` (default: the spec's `retrain_uri`) and goes through the sensor's
    admission control like any arrival: unchanged data is skipped, never retrained. Tick instants and
    daylight-saving rules are those of `ctloop.cron` (the Argo Events calendar's).
    """

    cron: str | None = None
    timezone: str = "UTC"
    interval: str | None = None
    data_uri: str | None = Field(default=None, min_length=1)
    gpu: bool = False

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("interval")
    @classmethod
    def _interval_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @model_validator(mode="after")
    def _one_timer(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("set exactly one of cron (e.g. '30 2 * * *') and interval (e.g. '6h')")
        if self.interval is not None and self.timezone != "UTC":
            raise ValueError(f"timezone {self.timezone!r} has no effect on an interval; it applies to cron only")
        return self

    @property
    def description(self) -> str:
        return f"cron '{self.cron}' {self.timezone}" if self.cron else f"every {self.interval}"

    def ticks(self, after: datetime) -> Iterator[datetime]:
        """Tick instants (UTC) strictly after `after` (an aware datetime), in order."""
        return schedule_ticks(after, cron=self.cron or "", timezone=self.timezone, interval=self.interval or "")

    def next_tick(self, after: datetime) -> datetime | None:
        return next(self.ticks(after), None)


class TrainResources(Frozen):
    """What the train step's pod asks the cluster for."""

    gpus: int = Field(default=0, ge=0)
    memory: str = Field(default="8Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    cpu: str = Field(default="2", pattern=r"^[0-9]+(\.[0-9]+)?m?$")


class MonitorSpec(Frozen):
    """What the drift monitor watches: the declared feature columns by default; for non-tabular inputs,
    `featurize` names a function turning a batch of model inputs into a DataFrame of monitored columns."""

    columns: tuple[str, ...] = ()
    featurize: str | None = None

    @field_validator("featurize")
    @classmethod
    def _featurize_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value, "monitor.featurize")


LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "mape"})


class QualityRule(Frozen):
    """When live quality counts as degraded: the metric (a name the promotion policy uses) measured on the
    labelled rows served within `window` (a duration like '24h'), once there are at least `min_rows` of them.

    `min` (a metric where higher is better) or `max` (lower is better) is a fixed bound; `max_drop` is how much
    worse than the version's own holdout figure it may get. Set one or both of a bound and `max_drop`."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(default=None, ge=0)
    min_rows: int = Field(default=200, ge=1)
    window: str = "24h"

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        parse_interval(value)
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> QualityRule:
        if self.min is None and self.max is None and self.max_drop is None:
            raise ValueError("a quality rule needs min, max or max_drop")
        if self.min is not None and self.max is not None:
            raise ValueError("set min (higher is better) or max (lower is better), not both")
        lower = self.metric in LOWER_IS_BETTER
        if lower and self.min is not None:
            raise ValueError(f"{self.metric} is better when lower: bound it with max, not min")
        if not lower and self.max is not None:
            raise ValueError(f"{self.metric} is better when higher: bound it with min, not max")
        return self

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    @property
    def window_s(self) -> float:
        return parse_interval(self.window)


class ModelSpec(Frozen):
    name: str
    data: DataSchema
    # Where labelled recent data for this model lands (a prefix); a drift-triggered run retrains
    # on it. Prediction windows carry no labels, so they cannot be trained on themselves.
    retrain_uri: str | None = None
    train: TrainParams = TrainParams()
    policy: PromotionPolicy = PromotionPolicy()
    trainer: str | None = None
    """`package.module:function` taking a ctloop.TrainContext; None is the built-in tabular MLP."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Free-form parameters handed to the trainer as `TrainContext.params`."""
    metrics: dict[str, str] = Field(default_factory=dict)
    """Extra holdout metrics: name -> `package.module:function(y_true, y_pred) -> float`."""
    image: str | None = None
    """Image holding the trainer's code, pinned by digest (`repo@sha256:...`); the cluster's train step runs it."""
    resources: TrainResources | None = None
    monitor: MonitorSpec = MonitorSpec()
    schedule: Schedule | None = None
    quality: QualityRule | None = None
    """When live quality on labelled traffic raises `ctloop.quality.degraded` (a retrain trigger)."""

    @field_validator("name")
    @classmethod
    def _name_follows_the_rule(cls, value: str) -> str:
        return check_model_name(value)

    @model_validator(mode="before")
    @classmethod
    def _default_policy_fits_the_task(cls, data: Any) -> Any:
        """A spec that never chose a policy is judged by accuracy, or by rmse when it is a regression."""
        if isinstance(data, dict) and "policy" not in data:
            schema = data.get("data")
            task = schema.get("task") if isinstance(schema, dict) else getattr(schema, "task", None)
            if task == "regression":
                return {**data, "policy": PromotionPolicy(metric="rmse", direction="min")}
        return data

    @field_validator("trainer")
    @classmethod
    def _trainer_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_reference(value, "trainer")

    @field_validator("metrics")
    @classmethod
    def _metric_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, reference in value.items():
            check_reference(reference, f"metric {name!r}")
        return value

    @field_validator("image")
    @classmethod
    def _image_pinned(cls, value: str | None) -> str | None:
        if value is not None and not _PINNED_IMAGE.match(value):
            raise ValueError(
                f"image {value!r} is not pinned by digest: a tag can move under a registered model. Use "
                "'REPO@sha256:<64 hex>' (e.g. from `docker inspect --format '{{index .RepoDigests 0}}' IMAGE`)"
            )
        return value

    @model_validator(mode="after")
    def _label_not_a_feature(self) -> ModelSpec:
        if self.data.label and self.data.label in self.data.feature_names:
            raise ValueError(f"label column {self.data.label!r} is also listed as a feature")
        return self

    @model_validator(mode="after")
    def _policy_names_produced_metrics(self) -> ModelSpec:
        known = self.known_metrics
        clash = sorted(set(self.metrics) & set(self.data.metric_names))
        if clash:
            raise ValueError(f"user metrics {clash} shadow built-in metrics; pick other names")
        named = [self.policy.metric, *(g.metric for g in self.policy.guardrails)]
        if self.quality is not None and self.quality.metric not in self.data.metric_names:
            raise ValueError(f"quality rule names metric {self.quality.metric!r}, which live quality never "
                             f"computes for a {self.data.task} model; known: {list(self.data.metric_names)}")
        bake = self.policy.bake_metric
        if bake is not None and bake not in self.data.metric_names:
            raise ValueError(f"policy.bake compares metric {bake!r}, which live quality never computes for a "
                             f"{self.data.task} model; known: {list(self.data.metric_names)}")
        unknown = [m for m in named if m not in known]
        if unknown:
            raise ValueError(f"policy names metrics {unknown} that evaluation never produces for a "
                             f"{self.data.task} model; known: {list(known)}")
        return self

    @property
    def known_metrics(self) -> tuple[str, ...]:
        """Every metric evaluation can produce for this spec (probability metrics need a model that
        returns probabilities; see docs/trainers.md)."""
        return (*self.data.metric_names, *self.metrics)


    @model_validator(mode="after")
    def _schedule_has_data(self) -> ModelSpec:
        if self.schedule is not None and not (self.schedule.data_uri or self.retrain_uri):
            raise ValueError("schedule has no data to retrain on: set schedule.data_uri or retrain_uri")
        return self

    @property
    def schedule_uri(self) -> str | None:
        """The prefix a scheduled tick snapshots: the schedule's own, else `retrain_uri`."""
        if self.schedule is None:
            return None
        return self.schedule.data_uri or self.retrain_uri


class SpecNotFound(LookupError, Refused):
    fix = "write the model's spec (a ModelSpec as JSON) there, or point CTLOOP_HOME at the home that has it"


class SpecInvalid(ValueError, Refused):
    """A spec file that does not validate; the message names the file and each problem."""


def specs_dir(settings: Settings) -> Path:
    return settings.home / "specs"


def spec_path(name: str, settings: Settings):
    return specs_dir(settings) / f"{name}.json"


def save_spec(spec: ModelSpec, settings: Settings) -> None:
    path = spec_path(spec.name, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json(indent=2))


def load_spec(name: str, settings: Settings) -> ModelSpec:
    path = spec_path(name, settings)
    if not path.is_file():
        raise SpecNotFound(f"no spec for model {name!r}: expected {path}")
    return read_spec(path)


def read_spec(path: Path) -> ModelSpec:
    """The spec in one JSON file, or `SpecInvalid` naming the file and what is wrong."""
    try:
        return ModelSpec.model_validate_json(path.read_text())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SpecInvalid(f"{path}: {problems}") from None


def load_specs(directory: Path) -> tuple[ModelSpec, ...]:
    """Every spec under `directory` (`*.json`), by name; none when the directory does not exist."""
    if not directory.is_dir():
        return ()
    return tuple(sorted((read_spec(p) for p in directory.glob("*.json")), key=lambda s: s.name))

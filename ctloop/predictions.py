"""The prediction log: what serving publishes to `settings.topics.predictions` and the monitor reads.

One message is one JSON `PredictionBatch`: many rows per message, because per-row messages cap a
Kafka/Faust pipeline at a few hundred messages per second. Rows are the model's input features as
served (a dict per row, possibly malformed: the monitor counts bad rows instead of rejecting the
batch); `predictions[i]` belongs to `rows[i]`, and `ids[i]`, when present, is the id serving returned to
the client for that prediction (what a later label names).

`role` says which model answered: "champion" (the default, and what older messages without the field
mean) for the version whose predictions the client received, "shadow" for a version scored beside it on
the same rows, never returned; a shadow batch carries the champion batch's ids, so a label scores both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class PredictionBatchError(ValueError):
    """A message that is not a prediction batch; the message says why."""


ROLES = ("champion", "shadow")


class PredictionBatch(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    version: str | None = None
    rows: list[dict[str, Any]]
    predictions: list[Any]
    ids: list[str] | None = Field(default=None, description="the served prediction ids, one per row")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="when the batch was served")
    role: Literal["champion", "shadow"] = Field(
        default="champion", description="champion: the answer the client got; shadow: scored beside it, never returned")

    @model_validator(mode="after")
    def _one_prediction_per_row(self) -> PredictionBatch:
        if len(self.predictions) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(self.predictions)} predictions")
        if self.ids is not None and len(self.ids) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(self.ids)} ids")
        return self

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def parse_batch(raw: bytes | str) -> PredictionBatch:
    """Parse one prediction-log message, or raise `PredictionBatchError` naming the problem."""
    try:
        return PredictionBatch.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "batch"
        raise PredictionBatchError(f"invalid prediction batch at {where}: {first['msg']}") from None

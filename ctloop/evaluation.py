"""The result of scoring a challenger against the champion on the same held-out data.

Produced by `ctloop.trainer.evaluate`, consumed by the promotion policy in `deploy`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Evaluation(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    challenger_uri: str
    challenger: dict[str, float]
    champion_version: str | None = None
    champion: dict[str, float] | None = None
    holdout_digest: str
    holdout_rows: int

    @property
    def deltas(self) -> dict[str, float]:
        """challenger - champion per shared metric; empty when there is no champion."""
        if self.champion is None:
            return {}
        return {k: self.challenger[k] - self.champion[k] for k in self.challenger if k in self.champion}

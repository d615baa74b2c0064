"""The trainer and spec shown in README.md and docs/trainers.md, copied as a new user would, train through
ctloop's runner and are scored on the holdout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ctloop.modelspec import ModelSpec
from ctloop.snapshot import take_snapshot
from ctloop.trainer.train import train
from ctloop.trainer.validation import validate

ROOT = Path(__file__).resolve().parents[2]


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def customers(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"customer_id": np.arange(rows), "tenure": rng.gamma(2.0, 12.0, rows),
                          "monthly_spend": rng.normal(60, 20, rows), "support_calls": rng.poisson(1.5, rows)})
    risk = -0.08 * frame.tenure + 0.8 * frame.support_calls + rng.normal(0, 0.3, rows)
    return frame.assign(churned=(risk > risk.median()).astype(int))


@pytest.mark.parametrize("page", ["README.md", "docs/trainers.md"])
def test_the_documented_trainer_runs_as_written(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    code = next(b for b in blocks(ROOT / page, "python") if "def train(ctx: TrainContext)" in b)
    spec_text = next(b for b in blocks(ROOT / page, "json") if '"trainer"' in b)
    package = tmp_path / "src" / "my_team"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "churn.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    for name in [m for m in list(__import__("sys").modules) if m.startswith("my_team")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    spec = ModelSpec.model_validate_json(spec_text)
    (tmp_path / "data").mkdir()
    customers(600).to_parquet(tmp_path / "data" / "part-0.parquet", index=False)
    snapshot = take_snapshot(str(tmp_path / "data"))
    validate(snapshot, spec.data)
    result = train(snapshot, spec, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert result.metrics["accuracy"] > 0.75
    assert spec.policy.metric in result.metrics  # the documented policy is judged on a metric that exists

"""Challenger and champion are scored on the same held-out rows that training set aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctloop.modelspec import CLASSIFICATION_METRICS, REGRESSION_METRICS
from ctloop.snapshot import load_frame, take_snapshot
from ctloop.trainer.evaluate import evaluate, frame_digest, holdout_frame
from ctloop.trainer.split import split_frame
from ctloop.trainer.train import train
from tests.trainer.conftest import make_spec, write_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eval")
    snapshot = take_snapshot(str(write_dataset(root / "data")))
    uri = f"sqlite:///{root}/mlflow.db"
    champion = train(snapshot, make_spec(epochs=1, lr=0.001), tracking_uri=uri)
    challenger = train(snapshot, make_spec(), tracking_uri=uri)
    return snapshot, champion, challenger


def test_the_holdout_is_the_rows_training_held_out(runs) -> None:
    snapshot, _, _ = runs
    spec = make_spec()
    holdout = holdout_frame(snapshot, spec)
    parts = split_frame(load_frame(snapshot), spec)
    assert list(holdout["id"]) == list(parts.holdout["id"])
    assert not set(holdout["id"]) & (set(parts.train["id"]) | set(parts.val["id"]))
    assert frame_digest(holdout) == frame_digest(holdout_frame(snapshot, spec))


def test_with_a_champion_both_are_scored_on_the_same_rows(runs) -> None:
    snapshot, champion, challenger = runs
    spec = make_spec()
    holdout = holdout_frame(snapshot, spec)
    result = evaluate(challenger.model_uri, champion.model_uri, holdout, spec,
                      champion_version="3", holdout_digest=frame_digest(holdout))
    assert result.model == spec.name and result.champion_version == "3"
    assert result.holdout_rows == len(holdout) and result.holdout_digest == frame_digest(holdout)
    assert set(result.challenger) == set(result.champion) == set(CLASSIFICATION_METRICS)
    assert result.challenger == pytest.approx({k: challenger.metrics[k] for k in result.challenger})
    assert result.deltas["log_loss"] < 0 < result.deltas["accuracy"] + 1e-9


def test_without_a_champion_the_challenger_is_scored_alone(runs) -> None:
    snapshot, _, challenger = runs
    holdout = holdout_frame(snapshot, make_spec())
    result = evaluate(challenger.model_uri, None, holdout, make_spec(), holdout_digest="d")
    assert result.champion is None and result.champion_version is None and result.deltas == {}
    assert result.challenger["accuracy"] > 0.85


def test_a_regression_model_is_scored_by_rmse_mae_r2_mape(tmp_path: Path) -> None:
    spec = make_spec("regression", name="price")
    snapshot = take_snapshot(str(write_dataset(tmp_path / "data", task="regression")))
    run = train(snapshot, spec, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    holdout = holdout_frame(snapshot, spec)
    result = evaluate(run.model_uri, run.model_uri, holdout, spec, holdout_digest=frame_digest(holdout))
    assert set(result.challenger) == set(REGRESSION_METRICS)
    assert result.challenger == pytest.approx({k: run.metrics[k] for k in REGRESSION_METRICS})
    assert result.deltas == dict.fromkeys(REGRESSION_METRICS, 0.0)


def test_a_holdout_without_the_declared_columns_is_refused(runs) -> None:
    snapshot, _, challenger = runs
    holdout = holdout_frame(snapshot, make_spec()).drop(columns=["color"])
    with pytest.raises(ValueError, match=r"holdout lacks columns \['color'\]"):
        evaluate(challenger.model_uri, None, holdout, make_spec(), holdout_digest="d")

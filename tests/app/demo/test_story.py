"""The demo story is pure and its plot holds: drift in the inputs, a changed label relationship, one bad batch."""

import numpy as np
import pandas as pd
import pytest

from ctloop.app.demo.story import (
    AFTER,
    BEFORE,
    CATEGORICAL,
    LABEL,
    NUMERIC,
    PLANS,
    REGIONS,
    StoryConfig,
    build_story,
    label_logits,
)


def _design(frame: pd.DataFrame) -> np.ndarray:
    cols = [frame[n].to_numpy(dtype="float64") for n in NUMERIC]
    cols += [(frame["plan"] == p).to_numpy(dtype="float64") for p in PLANS]
    cols += [(frame["region"] == r).to_numpy(dtype="float64") for r in REGIONS]
    return np.column_stack(cols)


def _fit(frame: pd.DataFrame) -> np.ndarray:
    """A least-squares linear classifier: enough to show which data a model should be trained on."""
    weights, *_ = np.linalg.lstsq(_design(frame), frame[LABEL].to_numpy(dtype="float64") * 2 - 1, rcond=None)
    return weights


def _accuracy(weights: np.ndarray, frame: pd.DataFrame) -> float:
    return float(((_design(frame) @ weights > 0).astype(int) == frame[LABEL].to_numpy()).mean())


def test_same_config_gives_identical_frames():
    one, two = build_story(), build_story()
    for a, b in zip(one.batches, two.batches, strict=True):
        pd.testing.assert_frame_equal(a.frame, b.frame)
    for a, b in zip(one.traffic_after, two.traffic_after, strict=True):
        pd.testing.assert_frame_equal(a.frame, b.frame)


def test_another_seed_gives_other_data():
    assert not build_story(StoryConfig(seed=1)).bootstrap.frame.equals(build_story(StoryConfig(seed=2)).bootstrap.frame)


def test_batches_and_traffic_match_the_spec_schema_and_have_unique_row_keys():
    story = build_story()
    expected = {"row_id", *NUMERIC, *CATEGORICAL, LABEL}
    frames = [b.frame for b in story.batches] + [w.frame for w in story.traffic]
    for frame in frames:
        assert set(frame.columns) == expected
        assert set(frame[LABEL].unique()) <= set(story.spec.data.classes)
        assert frame[list(NUMERIC)].notna().all().all()
    assert pd.concat([f["row_id"] for f in frames]).is_unique
    assert set(story.spec.data.feature_names) == set(NUMERIC) | set(CATEGORICAL)


def test_sizes_follow_the_config():
    config = StoryConfig(bootstrap_rows=200, burst_batches=4, burst_rows=50, noisy_batch=3, traffic_rows=30,
                         traffic_windows_before=1, traffic_windows_after=3)
    story = build_story(config)
    assert len(story.bootstrap.frame) == 200
    assert [len(b.frame) for b in story.burst] == [50] * 4
    assert [b.noisy_labels for b in story.burst] == [False, False, False, True]
    assert [len(w.frame) for w in story.traffic] == [30] * 4
    assert [w.phase for w in story.traffic] == ["before", "after", "after", "after"]


def test_exactly_one_burst_batch_has_garbled_labels():
    story = build_story()
    noisy = [b for b in story.burst if b.noisy_labels]
    assert len(noisy) == 1
    for batch in story.burst:
        truth = (label_logits(batch.frame, BEFORE) > 0).astype(int)
        agreement = float((truth == batch.frame[LABEL]).mean())
        assert agreement < 0.8 if batch.noisy_labels else agreement > 0.85


def test_inputs_drift_after_the_change():
    story = build_story()
    before = pd.concat([w.features for w in story.traffic_before])
    after = pd.concat([w.features for w in story.traffic_after])
    assert after["usage_hours"].mean() - before["usage_hours"].mean() > 1.0
    assert (after["plan"] == "pro").mean() > 2 * (before["plan"] == "pro").mean()
    assert after["tenure_months"].mean() < 0.7 * before["tenure_months"].mean()
    assert after["support_tickets"].mean() > 1.5 * before["support_tickets"].mean()
    assert AFTER.usage_mean != BEFORE.usage_mean
    assert LABEL not in after.columns and "row_id" not in after.columns


def test_a_model_trained_on_one_window_of_recent_traffic_wins_on_the_next():
    story = build_story()
    first, second = story.traffic_after[0].frame, story.traffic_after[1].frame
    old = _fit(story.bootstrap.frame)
    new = _fit(first)
    assert _accuracy(old, story.traffic_before[0].frame) > 0.7
    assert _accuracy(new, second) - _accuracy(old, second) > 0.3


def test_bad_config_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="noisy_batch"):
        StoryConfig(burst_batches=2, noisy_batch=2)
    with pytest.raises(ValueError, match="traffic_rows"):
        StoryConfig(traffic_rows=0)


def test_the_spec_asks_for_a_minimum_improvement():
    spec = build_story(StoryConfig(min_improvement=0.05)).spec
    assert spec.policy.min_improvement == 0.05
    assert spec.data.label == LABEL

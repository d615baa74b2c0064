"""Judging a bake window: the new champion against the previous one, on the same labelled requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ctloop.modelspec import BakeRule
from ctloop.monitors.bake import bake_alert, judge, paired
from ctloop.monitors.outcomes import JoinedPrediction

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
RULE = BakeRule(window="10m", min_rows=20, tolerance=0.05)


@dataclass(frozen=True)
class Case:
    model: str = "churn"
    version: str = "2"
    previous: str = "1"
    opened_at: datetime = T0
    promotion: str = "abc123"


def rows(version: str, role: str, right: int, wrong: int, *, prefix: str = "p") -> list[JoinedPrediction]:
    """`right` correct then `wrong` incorrect binary predictions, ids p-0, p-1, ... (label always 1)."""
    return [JoinedPrediction(f"{prefix}-{i}", "churn", version, role, {"x": float(i)}, 1 if i < right else 0, 1,
                             T0 + timedelta(seconds=i), T0 + timedelta(seconds=i + 60))
            for i in range(right + wrong)]


def test_a_champion_worse_beyond_tolerance_on_enough_rows_is_rolled_back_with_its_evidence():
    verdict = judge(Case(), RULE, "accuracy", rows("2", "champion", 14, 16), rows("1", "shadow", 27, 3),
                    T0 + timedelta(minutes=1))
    assert verdict.outcome == "rollback"
    e = verdict.evidence
    assert (e["champion_value"], e["previous_value"], e["rows"]) == (pytest.approx(14 / 30), pytest.approx(0.9), 30)
    assert (e["champion_version"], e["previous_version"], e["metric"]) == ("2", "1", "accuracy")
    assert e["window_start"] == T0.isoformat() and e["window_end"] == (T0 + timedelta(minutes=10)).isoformat()
    assert "0.4667 for version 2 against 0.9000 for version 1 on the same 30 labelled requests" in verdict.reason
    alert = bake_alert(verdict)
    assert alert["text"] == "Rolled back model churn: version 2 -> 1 after its bake"
    assert "30 paired labelled requests" in alert["blocks"][1]["text"]["text"]


def test_too_few_rows_wait_however_bad_they_look():
    verdict = judge(Case(), RULE, "accuracy", rows("2", "champion", 0, 19), rows("1", "shadow", 19, 0),
                    T0 + timedelta(minutes=1))
    assert (verdict.outcome, verdict.evidence["rows"]) == ("pending", 19)


def test_worse_within_tolerance_is_kept_once_the_window_is_over_and_watched_until_then():
    champion, previous = rows("2", "champion", 28, 2), rows("1", "shadow", 29, 1)  # 0.933 against 0.967
    assert judge(Case(), RULE, "accuracy", champion, previous, T0 + timedelta(minutes=9)).outcome == "pending"
    kept = judge(Case(), RULE, "accuracy", champion, previous, T0 + timedelta(minutes=10))
    assert kept.outcome == "kept" and "within tolerance 0.05" in kept.reason


def test_a_window_that_ends_without_enough_evidence_keeps_the_champion_and_says_so():
    verdict = judge(Case(), RULE, "accuracy", rows("2", "champion", 5, 0), rows("1", "shadow", 5, 0),
                    T0 + timedelta(hours=1))
    assert verdict.outcome == "kept" and "kept without evidence" in verdict.reason


def test_only_requests_both_versions_scored_count():
    champion = rows("2", "champion", 10, 20)
    shadow = rows("1", "shadow", 30, 0)[:10] + rows("1", "shadow", 5, 0, prefix="elsewhere")
    mine, theirs = paired(champion, shadow)
    assert [r.prediction_id for r in mine] == [r.prediction_id for r in theirs] == [f"p-{i}" for i in range(10)]
    verdict = judge(Case(), RULE, "accuracy", champion, shadow, T0 + timedelta(minutes=1))
    assert (verdict.outcome, verdict.evidence["rows"]) == ("pending", 10), "the 10 paired rows are all right"


def test_for_a_metric_where_lower_is_better_a_higher_value_is_worse():
    def regression(version: str, role: str, error: float) -> list[JoinedPrediction]:
        return [JoinedPrediction(f"p-{i}", "churn", version, role, {}, 10.0 + error, 10.0, T0, T0) for i in range(25)]

    worse = judge(Case(), RULE, "rmse", regression("2", "champion", 1.0), regression("1", "shadow", 0.5), T0)
    better = judge(Case(), RULE, "rmse", regression("2", "champion", 0.5), regression("1", "shadow", 1.0),
                   T0 + timedelta(minutes=10))
    assert worse.outcome == "rollback" and worse.evidence["champion_value"] == pytest.approx(1.0)
    assert better.outcome == "kept"


def test_the_tolerance_is_the_largest_gap_allowed():
    rule = BakeRule(window="10m", min_rows=20, tolerance=0.1)
    at_edge = judge(Case(), rule, "accuracy", rows("2", "champion", 16, 4), rows("1", "shadow", 18, 2),
                    T0 + timedelta(minutes=10))
    beyond = judge(Case(), rule, "accuracy", rows("2", "champion", 15, 5), rows("1", "shadow", 18, 2), T0)
    assert at_edge.outcome == "kept" and beyond.outcome == "rollback"

from datetime import UTC, datetime, timedelta

import pytest

from ctloop.events import ColumnDrift
from ctloop.monitors.alerts import (
    AlertLedger,
    AlertPolicy,
    AlertRecord,
    EpisodeState,
    WebhookNotifier,
    decide,
    slack_message,
)
from ctloop.monitors.detector import WindowVerdict

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(pattern: str, policy: AlertPolicy, step_s: float = 60) -> str:
    """Feed windows ('D' drift, '.' clean) one step apart; returns where alerts fired ('A')."""
    state, out = EpisodeState(), []
    for i, c in enumerate(pattern):
        state, alert = decide(state, c == "D", T0 + timedelta(seconds=i * step_s), policy)
        out.append("A" if alert else "-")
    return "".join(out)


def test_one_alert_per_episode_until_k_clean_windows_end_it():
    policy = AlertPolicy(clean_windows=3, cooldown_s=0)
    assert _run("..DDD.D..DD...D", policy) == "--A-----------A"


def test_cooldown_suppresses_a_new_episode_that_starts_too_soon():
    policy = AlertPolicy(clean_windows=1, cooldown_s=300)
    # episodes open at windows 0, 2, 6, 8 (60 s apart): 120 s is too soon, 360 s is not.
    assert _run("D.D...D.D", policy) == "A-----A--"


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="clean_windows"):
        AlertPolicy(clean_windows=0)


def _verdict() -> WindowVerdict:
    return WindowVerdict(
        start=T0, end=T0 + timedelta(minutes=5), rows=100, untested=(), drifted_share=0.5, dataset_drift=True,
        columns={"a": ColumnDrift(stattest="wasserstein", score=0.4, threshold=0.1, drifted=True),
                 "b": ColumnDrift(stattest="jensenshannon", score=0.01, threshold=0.1, drifted=False)},
        bad_rows={"missing": 2, "extra": 0, "nan": 0, "wrong_type": 0},
    )


def test_slack_message_names_the_model_and_the_drifted_columns():
    msg = slack_message("churn", "4", _verdict(), "file:///r.html")
    assert msg["text"].startswith("Drift detected for model churn v4: 1/2 columns")
    body = msg["blocks"][1]["text"]["text"]
    assert "`a` wasserstein" in body and "`b`" not in body and "file:///r.html" in body and "'missing': 2" in body


def test_notifier_posts_json_to_the_webhook(webhook):
    assert WebhookNotifier(webhook.url).send({"text": "hi"})
    assert webhook == [{"text": "hi"}]


def test_notifier_failure_is_reported_not_raised():
    assert not WebhookNotifier("http://127.0.0.1:9/none", timeout_s=1).send({"text": "hi"})
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://x")


def test_the_ledger_keeps_episode_state_and_pending_alerts_for_the_next_monitor(tmp_path):
    root = (tmp_path / "store").as_uri()
    assert AlertLedger(root).load("m") == AlertRecord()
    state = EpisodeState(in_episode=True, clean_streak=1, last_alert_at=T0, episode=T0.isoformat())
    AlertLedger(root).save("m", AlertRecord(state, ({"text": "drift"},)))

    again = AlertLedger(root)
    assert again.load("m") == AlertRecord(state, ({"text": "drift"},))
    assert again.load("other") == AlertRecord()
    assert again.uri("m").endswith("/store/alerts/m.json")


def test_an_opened_episode_is_named_by_its_first_drifting_window():
    state, alert = decide(EpisodeState(), True, T0, AlertPolicy())
    assert alert and state.episode == T0.isoformat()
    later, again = decide(state, True, T0 + timedelta(minutes=1), AlertPolicy())
    assert not again and later.episode == T0.isoformat()

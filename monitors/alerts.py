"""Drift alerts: one per drift episode, to a Slack-compatible webhook.

An episode opens at the first drifting window and ends after `clean_windows` clean windows in a
row; only its opening is alerted. `cooldown_s` additionally spaces alerts of one model, so a
flapping stream (drift, clean x K, drift, ...) does not page every few windows. The decision is a
pure function of the state and the verdict; the HTTP call is separate and never raises.

`AlertLedger` keeps each model's episode state, and the alerts decided but not yet confirmed sent,
in the object store, so a restarted monitor (another pod) neither alerts an episode again nor
forgets an alert it had decided on.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ctloop.crashpoints import crash_point
from ctloop.monitors.detector import WindowVerdict
from ctloop.objectstore import StoreError, open_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    clean_windows: int = 3
    cooldown_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.clean_windows < 1:
            raise ValueError(f"clean_windows must be at least 1, got {self.clean_windows}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {self.cooldown_s}")


@dataclass(frozen=True, slots=True)
class EpisodeState:
    in_episode: bool = False
    clean_streak: int = 0
    last_alert_at: datetime | None = None
    # The open (or last) episode: the end of its first drifting window.
    episode: str | None = None


def decide(state: EpisodeState, drifted: bool, now: datetime, policy: AlertPolicy) -> tuple[EpisodeState, bool]:
    """The next state, and whether this window should raise an alert."""
    if not drifted:
        if not state.in_episode:
            return state, False
        streak = state.clean_streak + 1
        if streak >= policy.clean_windows:
            return replace(state, in_episode=False, clean_streak=0), False
        return replace(state, clean_streak=streak), False
    if state.in_episode:
        return replace(state, clean_streak=0), False
    cooling = state.last_alert_at is not None and now - state.last_alert_at < timedelta(seconds=policy.cooldown_s)
    opened = EpisodeState(in_episode=True, clean_streak=0, last_alert_at=state.last_alert_at if cooling else now,
                          episode=now.isoformat())
    return opened, not cooling


def slack_message(
    model: str, version: str | None, verdict: WindowVerdict, report_uri: str | None, episode: str | None = None,
) -> dict[str, Any]:
    """Slack incoming-webhook JSON: `text` for notifications, `blocks` for the channel."""
    drifted = verdict.drifted_columns
    head = (
        f"Drift detected for model {model}" + (f" v{version}" if version else "")
        + f": {len(drifted)}/{len(verdict.columns)} columns drifted (share {verdict.drifted_share:.2f})"
    )
    lines = [
        f"• `{name}` {col.stattest} = {col.score:.4g} (threshold {col.threshold:g})"
        for name, col in verdict.columns.items()
        if col.drifted
    ]
    bad = sum(verdict.bad_rows.values())
    details = [
        f"Window {verdict.start.isoformat()} → {verdict.end.isoformat()}, {verdict.rows} rows"
        + (f", {bad} bad-row flags {verdict.bad_rows}" if bad else ""),
        *lines[:20],
    ]
    if report_uri:
        details.append(f"Report: {report_uri}")
    if episode:
        details.append(f"Episode: {episode}")
    return {
        "text": head,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)[:3000]}},
        ],
    }


class WebhookNotifier:
    """POSTs JSON to a webhook URL; a failure is logged and reported as False, never raised."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s), got {url!r}")
        self.url = url
        self.timeout_s = timeout_s

    def send(self, payload: dict[str, Any]) -> bool:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.warning("drift alert to %s failed: %s", self.url, exc)
            return False


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """What survives a monitor: its episode state and the alerts it decided on but has not sent."""

    state: EpisodeState = EpisodeState()
    pending: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> bytes:
        state = self.state
        return json.dumps({
            "in_episode": state.in_episode, "clean_streak": state.clean_streak,
            "last_alert_at": state.last_alert_at.isoformat() if state.last_alert_at else None,
            "episode": state.episode, "pending": list(self.pending),
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AlertRecord:
        doc = json.loads(raw)
        last = doc.get("last_alert_at")
        state = EpisodeState(bool(doc["in_episode"]), int(doc["clean_streak"]),
                             datetime.fromisoformat(last) if last else None, doc.get("episode"))
        return cls(state, tuple(doc.get("pending", ())))


class AlertLedger:
    """Alert records under `<root_uri>/alerts/<model>.json` (file:// or s3://), one writer per model
    (the model's monitor); an unchanged record is not written again."""

    def __init__(self, root_uri: str, *, s3_endpoint_url: str | None = None) -> None:
        self._store, self._prefix = open_uri(root_uri.rstrip("/") + "/", s3_endpoint_url=s3_endpoint_url)
        self._known: dict[str, AlertRecord] = {}

    def uri(self, model: str) -> str:
        return self._store.uri(self._key(model))

    def _key(self, model: str) -> str:
        return f"{self._prefix}alerts/{model}.json"

    def load(self, model: str) -> AlertRecord:
        if model not in self._known:
            try:
                self._known[model] = AlertRecord.from_json(self._store.get(self._key(model)))
            except StoreError:
                self._known[model] = AlertRecord()
        return self._known[model]

    def save(self, model: str, record: AlertRecord) -> None:
        if self._known.get(model) == record:
            return
        self._store.put(self._key(model), record.to_json())
        self._known[model] = record
        crash_point("alert-state-written")

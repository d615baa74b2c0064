"""The bake window: a promoted champion judged on live labels against the champion it replaced.

After a promotion of a model whose spec sets `policy.bake`, serving shadows the `previous` alias
(`ctloop serve --shadow previous`), so both versions score the same live requests under the same
prediction ids. `bake_once` pairs the two versions' labelled rows by prediction id, among rows served
within the window, and `judge` compares the bake metric on them:

- at least `min_rows` pairs and the champion worse than the previous one by more than `tolerance`:
  roll back (through the same audited path as a manual rollback, with the evidence) and alert (at least
  once, given an `AlertLedger`);
- the window over otherwise: keep the champion and close the bake in the audit trail (with the evidence,
  or saying there was too little of it);
- else: pending, judged again on the next call.

The registry side (which promotion is baking, the rollback, the closing entry) is `Bakes`, which
`ctloop.deploy.bake.RegistryBakes` implements: monitors and deploy do not import each other, the
application wires them (`ctloop bake run`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from ctloop.modelspec import LOWER_IS_BETTER, BakeRule, ModelSpec
from ctloop.monitors.alerts import AlertLedger, AlertRecord, WebhookNotifier
from ctloop.monitors.live_quality import live_quality
from ctloop.monitors.outcomes import CHAMPION, SHADOW, JoinedPrediction, OutcomeStore

log = logging.getLogger(__name__)


class Baking(Protocol):
    """A promotion under bake: `version` became champion at `opened_at`, replacing `previous`;
    `promotion` identifies it (its audit entry)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def previous(self) -> str: ...
    @property
    def opened_at(self) -> datetime: ...
    @property
    def promotion(self) -> str: ...


class Bakes(Protocol):
    """Where bakes are found and ended (the registry, through `ctloop.deploy.bake.RegistryBakes`)."""

    def baking(self, model: str) -> Baking | None:
        """The open bake of `model`'s current champion, if any."""
        ...

    def roll_back(self, baking: Baking, *, reason: str, evidence: dict[str, Any]) -> bool:
        """Roll the champion back to `previous`; False when refused (the champion moved meanwhile)."""
        ...

    def keep(self, baking: Baking, *, reason: str, evidence: dict[str, Any]) -> None:
        """Close the bake keeping the champion."""
        ...


Outcome = Literal["pending", "rollback", "kept"]


@dataclass(frozen=True)
class BakeVerdict:
    model: str
    version: str
    previous: str
    outcome: Outcome
    reason: str
    evidence: dict[str, Any]


def paired(
    champion: Sequence[JoinedPrediction], shadow: Sequence[JoinedPrediction],
) -> tuple[list[JoinedPrediction], list[JoinedPrediction]]:
    """The rows of both versions for the same predictions (ids present in both), in the same order."""
    others = {row.prediction_id: row for row in shadow}
    mine = [row for row in champion if row.prediction_id in others]
    return mine, [others[row.prediction_id] for row in mine]


def judge(
    baking: Baking, rule: BakeRule, metric: str, champion: Sequence[JoinedPrediction],
    shadow: Sequence[JoinedPrediction], now: datetime,
) -> BakeVerdict:
    """The verdict on one bake from the champion's rows and the previous version's shadow rows (pure)."""
    end = baking.opened_at + timedelta(seconds=rule.window_s)
    mine, theirs = paired(champion, shadow)
    n = len(mine)
    ours = live_quality(mine, [metric]).metrics.get(metric)
    before = live_quality(theirs, [metric]).metrics.get(metric)
    evidence = {
        "metric": metric, "champion_version": baking.version, "champion_value": ours,
        "previous_version": baking.previous, "previous_value": before, "rows": n, "min_rows": rule.min_rows,
        "tolerance": rule.tolerance, "window_start": baking.opened_at.isoformat(), "window_end": end.isoformat(),
    }

    def verdict(outcome: Outcome, reason: str) -> BakeVerdict:
        return BakeVerdict(baking.model, baking.version, baking.previous, outcome, reason, evidence)

    over = now >= end
    if n >= rule.min_rows and ours is not None and before is not None:
        worse_by = ours - before if metric in LOWER_IS_BETTER else before - ours
        figures = (f"{metric} {ours:.4f} for version {baking.version} against {before:.4f} for version "
                   f"{baking.previous} on the same {n} labelled requests")
        if worse_by > rule.tolerance + 1e-12:  # a gap equal to the tolerance, up to rounding, is allowed
            return verdict("rollback", f"bake: {figures}, worse by {worse_by:.4f} (tolerance {rule.tolerance:g})")
        if over:
            return verdict("kept", f"bake passed: {figures}, within tolerance {rule.tolerance:g}")
        return verdict("pending", f"no worse so far: {figures}")
    if over:
        return verdict("kept", f"bake window ended with {n} paired labelled requests (fewer than {rule.min_rows}, "
                               f"or {metric} undefined on them): kept without evidence")
    return verdict("pending", f"{n} of {rule.min_rows} paired labelled requests so far")


def bake_alert(verdict: BakeVerdict) -> dict[str, Any]:
    """Slack incoming-webhook JSON for an automatic rollback."""
    e = verdict.evidence
    head = f"Rolled back model {verdict.model}: version {verdict.version} -> {verdict.previous} after its bake"
    details = "\n".join([
        verdict.reason,
        f"Window {e['window_start']} -> {e['window_end']}; {e['rows']} paired labelled requests "
        f"(at least {e['min_rows']} needed)",
    ])
    return {"text": head, "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": details[:3000]}},
    ]}


def bake_once(
    spec: ModelSpec, store: OutcomeStore, bakes: Bakes, *, notifier: WebhookNotifier | None = None,
    ledger: AlertLedger | None = None, now: datetime | None = None,
) -> BakeVerdict | None:
    """Judge the open bake of `spec`'s model, if it has a bake rule and one is open, and act on the verdict:
    roll back and alert, or close it keeping the champion. Returns the verdict (None: nothing to bake).

    With a `ledger`, a rollback's alert is recorded before the rollback and struck off once sent, and every
    call retries what is left: a failed send, or a process that died between rollback and alert, still
    alerts (at least once)."""
    rule = spec.policy.bake
    if rule is None:
        return None
    try:
        return _judge_and_act(spec, rule, store, bakes, notifier, ledger, now or datetime.now(UTC))
    finally:
        if ledger is not None and notifier is not None:
            _send_pending(ledger, notifier, spec.name)


def _judge_and_act(
    spec: ModelSpec, rule: BakeRule, store: OutcomeStore, bakes: Bakes, notifier: WebhookNotifier | None,
    ledger: AlertLedger | None, now: datetime,
) -> BakeVerdict | None:
    baking = bakes.baking(spec.name)
    if baking is None:
        return None
    metric = spec.policy.bake_metric
    assert metric is not None
    end = baking.opened_at + timedelta(seconds=rule.window_s)
    champion = store.joined(spec.name, baking.version, since=baking.opened_at, until=end, role=CHAMPION)
    shadow = store.joined(spec.name, baking.previous, since=baking.opened_at, until=end, role=SHADOW)
    verdict = judge(baking, rule, metric, champion, shadow, now)
    if verdict.outcome == "rollback":
        alert = bake_alert(verdict)
        if ledger is not None:
            _keep_pending(ledger, spec.name, alert, keep=True)
        if bakes.roll_back(baking, reason=verdict.reason, evidence=verdict.evidence):
            log.warning("%s", verdict.reason)
            if ledger is None and notifier is not None and not notifier.send(alert):
                log.warning("the rollback alert of %s was not delivered; the audit trail has it", spec.name)
        elif ledger is not None:
            _keep_pending(ledger, spec.name, alert, keep=False)
    elif verdict.outcome == "kept":
        bakes.keep(baking, reason=verdict.reason, evidence=verdict.evidence)
    return verdict


def _keep_pending(ledger: AlertLedger, model: str, alert: dict[str, Any], *, keep: bool) -> None:
    """Add (or remove) `alert` in the model's unsent alerts; one rollback's alert is there once, by its text."""
    record = ledger.load(model)
    others = tuple(a for a in record.pending if a.get("text") != alert["text"])
    ledger.save(model, AlertRecord(record.state, (*others, alert) if keep else others))


def _send_pending(ledger: AlertLedger, notifier: WebhookNotifier, model: str) -> None:
    record = ledger.load(model)
    pending = list(record.pending)
    while pending and notifier.send(pending[0]):
        pending.pop(0)
    if pending:
        log.warning("%d rollback alert(s) of %s not delivered yet; retried next round", len(pending), model)
    ledger.save(model, AlertRecord(record.state, tuple(pending)))

"""Registering challengers and moving the champion: automatic, manual and rollback share one path.

Every alias move holds the model's lock and is a small transaction:

1. recover: an intent left by a crashed move is rolled back (or closed, if its audit entry exists);
2. snapshot the aliases and write the intent (the snapshot) to a file next to the lock;
3. write `previous`, then `champion` (so a failure between them leaves the champion in place);
4. read both back and compare; on any failure restore the snapshot exactly and raise;
5. commit by writing the audit entry (a registered-model tag), then drop the intent.

The audit entry is the commit point: an intent without its audit entry is undone on recovery.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ctloop.bus import Bus
from ctloop.deploy.lock import model_lock
from ctloop.deploy.policy import Decision, decide
from ctloop.deploy.registry import (
    AUDIT_PREFIX,
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    HOLDOUT_TAG,
    METRIC_PREFIX,
    PREVIOUS,
    PROVENANCE_KEYS,
    REASONS_TAG,
    ROLE_ALIASES,
    TAG_PREFIX,
    NotFound,
    Registry,
    RegistryError,
)
from ctloop.evaluation import Evaluation
from ctloop.events import ModelPromoted, ModelRolledBack, Payload, new_event, to_bytes
from ctloop.failures import Refused
from ctloop.modelspec import PromotionPolicy
from ctloop.version import code_version

log = logging.getLogger(__name__)


class PromotionError(RegistryError):
    """A promotion or rollback that did not happen; the message says why."""


class PromotionRefused(PromotionError, Refused):
    """Refused before anything was written: missing version, rejected version, no previous."""


class PromotionFailed(PromotionError):
    """Failed midway; the message says whether the aliases were restored."""


@dataclass(frozen=True)
class PromotionResult:
    model: str
    action: Literal["promote", "rollback"]
    version: str
    previous: str | None
    actor: str
    reason: str
    manual: bool
    changed: bool = True
    audit_key: str | None = None
    published: bool = False
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))


def _registry(target: str | Registry) -> Registry:
    return target if isinstance(target, Registry) else Registry(target)


def _now() -> datetime:
    return datetime.now(UTC)


def _audit_entry(txid: str, entry: dict[str, Any]) -> tuple[str, str]:
    """(tag key, JSON value) of one audit entry; keys sort by time."""
    ts = _now()
    key = f"{AUDIT_PREFIX}{ts.strftime('%Y%m%dT%H%M%S.%f')}.{txid}"
    return key, json.dumps({"ts": ts.isoformat(), "id": txid, **entry}, sort_keys=True)


def _audit(registry: Registry, model: str, entry: dict[str, Any]) -> str:
    key, value = _audit_entry(uuid.uuid4().hex[:12], entry)
    registry.set_model_tag(model, key, value)
    return key


# registration


def provenance_tags(provenance: dict[str, str | None], evaluation: Evaluation, decision: Decision) -> dict[str, str]:
    tags = {f"{TAG_PREFIX}{k}": str(v) for k, v in provenance.items() if v is not None}
    tags.setdefault(f"{TAG_PREFIX}code_version", code_version())
    tags.update({f"{METRIC_PREFIX}{name}": repr(float(value)) for name, value in evaluation.challenger.items()})
    tags[HOLDOUT_TAG] = evaluation.holdout_digest
    tags["ctloop.holdout_rows"] = str(evaluation.holdout_rows)
    tags["ctloop.evaluated_against"] = evaluation.champion_version or "none"
    tags[DECISION_TAG] = decision.label
    tags[REASONS_TAG] = json.dumps(list(decision.reasons))
    return tags


def register_challenger(
    client_or_tracking_uri: str | Registry,
    model: str,
    model_uri: str,
    *,
    provenance: dict[str, str | None],
    evaluation: Evaluation,
    decision: Decision,
    lock_dir: Path,
) -> str:
    """Register `model_uri` as a new version of `model`, tagged with provenance, metrics and decision,
    and point `challenger` at it. Returns the version."""
    unknown = set(provenance) - set(PROVENANCE_KEYS)
    if unknown:
        raise ValueError(f"unknown provenance keys {sorted(unknown)}; expected some of {PROVENANCE_KEYS}")
    registry = _registry(client_or_tracking_uri)
    tags = provenance_tags(provenance, evaluation, decision)
    info = registry.create_version(model, model_uri, run_id=provenance.get("run_id"), tags=tags)
    with model_lock(lock_dir, model):
        registry.set_alias(model, CHALLENGER, info.version)
    return info.version


# the transaction


@dataclass
class _Intent:
    """What a move intends and the aliases as they were, written before the first alias write."""

    path: Path
    txid: str
    model: str
    before: dict[str, str | None]
    after: dict[str, str | None]

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"txid": self.txid, "model": self.model, "before": self.before,
                                   "after": self.after}))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


def _intent_path(lock_path: Path) -> Path:
    return lock_path.with_suffix(".intent.json")


def _recover(registry: Registry, model: str, lock_path: Path) -> None:
    """Finish what a crashed move left behind: committed (audit entry written and aliases as intended)
    → forget the intent; else restore the aliases from before and drop any audit entry of it."""
    path = _intent_path(lock_path)
    if not path.exists():
        return
    doc = json.loads(path.read_text())
    info = registry.model(model)
    audit_keys = [k for k in info.tags if k.startswith(AUDIT_PREFIX) and k.endswith(f".{doc['txid']}")]
    if audit_keys and _snapshot(registry, model) == doc["after"]:
        path.unlink()
        return
    registry.restore_aliases(model, doc["before"])
    for key in audit_keys:
        registry.delete_model_tag(model, key)
    _audit(registry, model, {
        "action": "recover", "actor": "ctloop", "reason": f"undid unfinished transaction {doc['txid']}",
        "restored": doc["before"],
    })
    path.unlink()
    log.warning("model %s: undid unfinished alias move %s, aliases restored to %s", model, doc["txid"], doc["before"])


def _snapshot(registry: Registry, model: str) -> dict[str, str | None]:
    aliases = registry.aliases(model)
    return {alias: aliases.get(alias) for alias in ROLE_ALIASES}


def _move(
    registry: Registry, model: str, lock_path: Path, before: dict[str, str | None], after: dict[str, str | None],
    audit: dict[str, Any],
) -> str:
    """Move aliases from `before` to `after` (None removes) and commit with an audit entry."""
    txid = uuid.uuid4().hex[:12]
    key, entry = _audit_entry(txid, audit)
    intent = _Intent(_intent_path(lock_path), txid, model, before, after)
    intent.write()
    order = [a for a in (PREVIOUS, CHAMPION, CHALLENGER) if after[a] != before[a]]
    try:
        for alias in order:
            if after[alias] is None:
                registry.delete_alias(model, alias)
            else:
                registry.set_alias(model, alias, after[alias])
        observed = _snapshot(registry, model)
        if observed != after:
            raise PromotionFailed(f"read-back mismatch for {model}: expected aliases {after}, found {observed}")
        registry.set_model_tag(model, key, entry)
    except Exception as exc:
        try:
            registry.restore_aliases(model, before)
            # The audit write may have landed with its response lost: the commit point must go too.
            registry.delete_model_tag(model, key)
        except Exception as restore_exc:
            raise PromotionFailed(
                f"{audit['action']} of {model} failed ({exc}); restoring aliases {before} also failed"
                f" ({restore_exc}); the next promotion or rollback of {model} restores them from {intent.path}"
            ) from exc
        intent.drop()
        raise PromotionFailed(f"{audit['action']} of {model} failed ({exc}); aliases restored to {before}") from exc
    intent.drop()
    return key


def _announcing(bus: Bus | None, topic: str | None) -> None:
    """Checked before anything moves: an announcement needs both the bus and its topic."""
    if bus is not None and topic is None:
        raise ValueError("a bus to announce promotions on needs the models topic too")


def _publish(bus: Bus | None, topic: str | None, model: str, payload: Payload) -> bool:
    if bus is None or topic is None:
        return False
    try:
        bus.publish(topic, to_bytes(new_event(payload)), key=model)
        bus.flush()
        return True
    except Exception:
        # The move is committed and serving also polls the alias; a lost event must not undo it.
        log.exception("could not publish %s for %s", payload.event_type, model)
        return False


def _tag_quietly(registry: Registry, model: str, version: str, tags: dict[str, str]) -> None:
    """Version tags written after commit only annotate; the audit entry already holds the facts."""
    try:
        registry.set_version_tags(model, version, tags)
    except RegistryError:
        log.exception("could not annotate %s version %s", model, version)


def _promote_locked(
    registry: Registry, model: str, version: str, lock_path: Path, *, actor: str, reason: str, manual: bool,
    decision: Decision | None = None,
) -> PromotionResult:
    _recover(registry, model, lock_path)
    try:
        info = registry.version(model, version)
    except NotFound as exc:
        raise PromotionRefused(f"cannot promote: {exc}; nothing changed") from None
    if not manual and info.decision != "promote":
        raise PromotionRefused(
            f"cannot promote {model} version {version} automatically: its decision is {info.decision or 'missing'}"
            f" ({'; '.join(info.reasons) or 'no reasons recorded'}); promote it manually with a reason"
        )
    before = _snapshot(registry, model)
    if before[CHAMPION] == version:
        return PromotionResult(model, "promote", version, before[PREVIOUS], actor, reason, manual, changed=False)
    after = {
        CHAMPION: version,
        PREVIOUS: before[CHAMPION] if before[CHAMPION] is not None else before[PREVIOUS],
        CHALLENGER: None if before[CHALLENGER] == version else before[CHALLENGER],
    }
    ts = _now()
    key = _move(registry, model, lock_path, before, after, {
        "action": "promote", "actor": actor, "reason": reason, "manual": manual, "version": version,
        "from_version": before[CHAMPION], "decision": decision.label if decision else info.decision,
        "reasons": list(decision.reasons) if decision else info.reasons,
    })
    _tag_quietly(registry, model, version, {
        "ctloop.promoted_at": ts.isoformat(), "ctloop.promoted_by": actor, "ctloop.promotion_reason": reason,
        "ctloop.manual": str(manual).lower(),
    })
    return PromotionResult(model, "promote", version, before[CHAMPION], actor, reason, manual, audit_key=key, ts=ts)


# public operations


def promote(
    tracking_uri: str | Registry,
    model: str,
    version: str,
    *,
    actor: str,
    reason: str,
    manual: bool,
    bus: Bus | None = None,
    models_topic: str | None = None,
    lock_dir: Path,
) -> PromotionResult:
    """Make `version` the champion (the old one becomes `previous`). Without `manual`, only a version
    whose recorded decision is promote may be promoted."""
    if not reason.strip():
        raise PromotionRefused("a promotion needs a reason")
    _announcing(bus, models_topic)
    registry = _registry(tracking_uri)
    with model_lock(lock_dir, model) as lock_path:
        result = _promote_locked(registry, model, str(version), lock_path, actor=actor, reason=reason, manual=manual)
    if not result.changed:
        return result
    published = _publish(bus, models_topic, model, ModelPromoted(
        model=model, version=result.version, previous_version=result.previous, actor=actor, reason=reason,
        manual=manual,
    ))
    return replace(result, published=published)


def rollback(
    tracking_uri: str | Registry,
    model: str,
    *,
    actor: str,
    reason: str = "rollback",
    bus: Bus | None = None,
    models_topic: str | None = None,
    lock_dir: Path,
) -> PromotionResult:
    """Make `previous` the champion again and drop `previous`, so a second rollback is refused
    instead of flipping back to the version just rolled away from."""
    _announcing(bus, models_topic)
    registry = _registry(tracking_uri)
    with model_lock(lock_dir, model) as lock_path:
        _recover(registry, model, lock_path)
        before = _snapshot(registry, model)
        if before[PREVIOUS] is None:
            raise PromotionRefused(f"cannot roll back {model}: it has no 'previous' version; nothing changed")
        if before[CHAMPION] is None:
            raise PromotionRefused(f"cannot roll back {model}: it has no champion; nothing changed")
        after = {CHAMPION: before[PREVIOUS], PREVIOUS: None, CHALLENGER: before[CHALLENGER]}
        ts = _now()
        key = _move(registry, model, lock_path, before, after, {
            "action": "rollback", "actor": actor, "reason": reason, "manual": True, "version": before[PREVIOUS],
            "from_version": before[CHAMPION],
        })
        _tag_quietly(registry, model, before[CHAMPION], {
            "ctloop.rolled_back_at": ts.isoformat(), "ctloop.rolled_back_by": actor,
            "ctloop.rollback_reason": reason,
        })
    result = PromotionResult(model, "rollback", before[PREVIOUS], before[CHAMPION], actor, reason, True,
                             audit_key=key, ts=ts)
    published = _publish(bus, models_topic, model, ModelRolledBack(
        model=model, from_version=before[CHAMPION], to_version=before[PREVIOUS], actor=actor, reason=reason,
    ))
    return replace(result, published=published)


def _redecide(
    registry: Registry, model: str, evaluation: Evaluation, champion: str | None, policy: PromotionPolicy | None,
) -> Decision:
    """The champion moved since the evaluation: judge again against the current one, which is only
    fair when it was scored on the same holdout."""
    stale = Decision(False, (
        f"stale evaluation: champion is now {champion}, the challenger was evaluated against"
        f" {evaluation.champion_version}; re-evaluate",
    ))
    if policy is None:
        return stale
    if champion is None:
        return decide(evaluation.model_copy(update={"champion_version": None, "champion": None}), policy)
    current = registry.version(model, champion)
    if current.tags.get(HOLDOUT_TAG) != evaluation.holdout_digest:
        return stale
    again = evaluation.model_copy(update={"champion_version": champion, "champion": current.metrics})
    redecided = decide(again, policy)
    return Decision(redecided.promote, (f"re-decided against current champion {champion}", *redecided.reasons))


def apply_decision(
    tracking_uri: str | Registry,
    model: str,
    model_uri: str,
    evaluation: Evaluation,
    decision: Decision,
    provenance: dict[str, str | None],
    *,
    actor: str = "ctloop",
    bus: Bus | None = None,
    topic: str | None = None,
    policy: PromotionPolicy | None = None,
    lock_dir: Path,
) -> tuple[str, PromotionResult | None]:
    """The automatic path: register the challenger, then under the lock promote it if the decision
    still holds against the champion of that moment. Every decision lands in the audit trail.

    If the champion changed since the evaluation, the challenger is judged again against the new
    champion's recorded metrics (given `policy` and the same holdout), else rejected as stale."""
    _announcing(bus, topic)
    registry = _registry(tracking_uri)
    version = register_challenger(
        registry, model, model_uri, provenance=provenance, evaluation=evaluation, decision=decision,
        lock_dir=lock_dir,
    )
    with model_lock(lock_dir, model) as lock_path:
        _recover(registry, model, lock_path)
        champion = registry.alias(model, CHAMPION)
        final = decision
        if champion != evaluation.champion_version:
            final = _redecide(registry, model, evaluation, champion, policy)
            registry.set_version_tags(model, version, {
                DECISION_TAG: final.label, REASONS_TAG: json.dumps(list(final.reasons)),
            })
        if not final.promote:
            _audit(registry, model, {
                "action": "reject", "actor": actor, "manual": False, "version": version, "champion": champion,
                "decision": "reject", "reasons": list(final.reasons),
            })
            return version, None
        result = _promote_locked(
            registry, model, version, lock_path, actor=actor, reason="; ".join(final.reasons), manual=False,
            decision=final,
        )
    published = _publish(bus, topic, model, ModelPromoted(
        model=model, version=version, previous_version=result.previous, actor=actor, reason=result.reason,
    ))
    return version, replace(result, published=published)

"""Registering challengers and moving the champion: automatic, manual and rollback share one path.

Every alias move holds the model's lock (kept in the registry, so all pods share it) and is a small
transaction whose state lives in the registry too:

1. recover: an intent left by a crashed move is rolled back (or closed, if its audit entry exists);
2. snapshot the aliases and write the intent (the snapshot, and the event to announce) as the
   model's `ctloop.intent` tag;
3. write `previous`, then `champion` (so a failure between them leaves the champion in place);
4. read both back and compare; on any failure restore the snapshot exactly and raise;
5. commit by writing the audit entry (a registered-model tag), record the event in the outbox,
   then drop the intent; after the lock, publish the outbox.

The audit entry is the commit point: an intent without its audit entry is undone on recovery, one
with it has its event recorded in the outbox, so every committed move is announced at least once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from ctloop.bus import Bus
from ctloop.crashpoints import crash_point
from ctloop.deploy import outbox
from ctloop.deploy.lock import HeldLock, LockLost, model_lock
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
    VersionInfo,
)
from ctloop.evaluation import Evaluation
from ctloop.events import ModelPromoted, ModelRolledBack, Payload, new_event
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


INTENT_TAG = "ctloop.intent"
# An announced reason is cut to this, so the event fits in a registry tag (5000 characters).
_MAX_EVENT_REASON = 1500


def _announcing(bus: Bus | None, topic: str | None) -> str | None:
    """Checked before anything moves: an announcement needs both the bus and its topic. The topic to
    announce on, or None when there is no bus."""
    if bus is not None and topic is None:
        raise ValueError("a bus to announce promotions on needs the models topic too")
    return topic if bus is not None else None


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
    crash_point("audit-written")
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
    registration_id: str | None = None,
) -> str:
    """Register `model_uri` as a new version of `model`, tagged with provenance, metrics and decision,
    and point `challenger` at it. Returns the version.

    Called again with the same `registration_id` (`lineage_id`: a workflow step run again after its
    process died, or at the same time on another pod), this returns the version registered before, and
    points `challenger` at it only if it holds no role yet: the check and the create hold the model's lock."""
    unknown = set(provenance) - set(PROVENANCE_KEYS)
    if unknown:
        raise ValueError(f"unknown provenance keys {sorted(unknown)}; expected some of {PROVENANCE_KEYS}")
    registry = _registry(client_or_tracking_uri)
    tags = provenance_tags(provenance, evaluation, decision)
    registry.ensure_model(model)  # the lock lives on the registered model
    # Under the lock, so that two promoters of one lineage (a step retried while its first attempt still
    # runs, on another pod) cannot both miss each other's version in the registry's check-then-create.
    try:
        with model_lock(registry, model) as held:
            return _register_locked(registry, held, model_uri, provenance, tags, registration_id)
    except LockLost:
        # The lease ran out while the registry held the create (down or stalled for longer than the lease):
        # another promoter may have registered the lineage meanwhile and the create landed after it. Take
        # the lock again: the create finds the version, and the fence below keeps only the oldest.
        log.warning("promotion lock of %s lost during the registration of %s; registering again", model, model_uri)
        with model_lock(registry, model) as held:
            return _register_locked(registry, held, model_uri, provenance, tags, registration_id)


def _register_locked(registry: Registry, held: HeldLock, model_uri: str, provenance: dict[str, str | None],
                     tags: dict[str, str], registration_id: str | None) -> str:
    model = held.model
    held.check()
    info = registry.create_version(model, model_uri, run_id=provenance.get("run_id"), tags=tags,
                                   registration_id=registration_id)
    crash_point("model-registered")
    held.check()
    if registration_id is not None:
        info = _fence_registration(registry, held, registration_id) or info
    # A version registered before (same registration id) keeps the role it has; search results do
    # not carry aliases, so the model's are read.
    if info.version not in registry.aliases(model).values():
        registry.set_alias(model, CHALLENGER, info.version)
        crash_point("alias-moved")
    return info.version


def _fence_registration(registry: Registry, held: HeldLock, registration_id: str) -> VersionInfo | None:
    """Keep the oldest version of a registration and delete the later ones (made by a create that
    the registry ran after its sender's lease had run out); a later one that already holds an alias,
    e.g. promoted by hand, is kept and logged."""
    model = held.model
    found = registry.registered(model, registration_id)
    if not found:
        return None
    first, *later = found
    roles = set(registry.aliases(model).values())
    for duplicate in later:
        if duplicate.version in roles:
            log.warning("%s version %s repeats the lineage of version %s but holds an alias: kept", model,
                        duplicate.version, first.version)
            continue
        held.check()
        registry.delete_version(model, duplicate.version)
        log.warning("%s version %s repeated the lineage of version %s (a create that landed late): deleted",
                    model, duplicate.version, first.version)
    return first


def lineage_id(model: str, provenance: dict[str, str | None]) -> str | None:
    """A registration id derived from the version's lineage (model, data digest, code version), so
    that a workflow registers one version per lineage however often its step runs; None without a
    data digest or code version."""
    digest, code = provenance.get("data_digest"), provenance.get("code_version")
    if not digest or not code:
        return None
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ctloop.registration/{model}/{digest}/{code}").hex


# the transaction


@dataclass(frozen=True)
class _Intent:
    """What a move intends, the aliases as they were and the event to announce; written before the
    first alias write, as a registered-model tag every pod can read."""

    txid: str
    before: dict[str, str | None]
    after: dict[str, str | None]
    announce: outbox.Record | None

    def to_json(self) -> str:
        return json.dumps({"txid": self.txid, "before": self.before, "after": self.after,
                           "announce": self.announce.to_json() if self.announce else None})

    @classmethod
    def from_json(cls, raw: str) -> _Intent:
        doc = json.loads(raw)
        announce = outbox.Record.from_json(doc["announce"]) if doc.get("announce") else None
        return cls(doc["txid"], doc["before"], doc["after"], announce)


def _recover(registry: Registry, model: str) -> None:
    """Finish what a crashed move left behind: committed (audit entry written and aliases as intended)
    → record its event in the outbox and forget the intent; else restore the aliases from before and
    drop any audit entry of it."""
    info = registry.model(model)
    raw = info.tags.get(INTENT_TAG)
    if raw is None:
        return
    intent = _Intent.from_json(raw)
    audit_keys = [k for k in info.tags if k.startswith(AUDIT_PREFIX) and k.endswith(f".{intent.txid}")]
    if audit_keys and _aliases_of(info.aliases) == intent.after:
        if intent.announce is not None:
            outbox.record(registry, intent.announce)
        registry.delete_model_tag(model, INTENT_TAG)
        return
    registry.restore_aliases(model, intent.before)
    if intent.announce is not None:
        # An undone move must not be announced: its record may have been kept before the crash.
        registry.delete_model_tag(model, intent.announce.key)
    for key in audit_keys:
        registry.delete_model_tag(model, key)
    _audit(registry, model, {
        "action": "recover", "actor": "ctloop", "reason": f"undid unfinished transaction {intent.txid}",
        "restored": intent.before,
    })
    registry.delete_model_tag(model, INTENT_TAG)
    log.warning("model %s: undid unfinished alias move %s, aliases restored to %s", model, intent.txid, intent.before)


def _aliases_of(aliases: dict[str, str]) -> dict[str, str | None]:
    return {alias: aliases.get(alias) for alias in ROLE_ALIASES}


def _snapshot(registry: Registry, model: str) -> dict[str, str | None]:
    return _aliases_of(registry.aliases(model))


def _announcement(txid: str, model: str, announce: tuple[str, Payload] | None) -> outbox.Record | None:
    """The outbox record of a move, with an event id derived from the move, or None when the caller
    publishes nowhere."""
    if announce is None:
        return None
    topic, payload = announce
    if len(getattr(payload, "reason", "")) > _MAX_EVENT_REASON:
        payload = payload.model_copy(update={"reason": payload.reason[: _MAX_EVENT_REASON - 3] + "..."})
    event = new_event(payload, id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctloop.move/{model}/{txid}")))
    return outbox.Record.of(txid, topic, model, event)


def _move(
    registry: Registry, model: str, held: HeldLock, before: dict[str, str | None], after: dict[str, str | None],
    audit: dict[str, Any], announce: tuple[str, Payload] | None = None,
) -> tuple[str, str | None]:
    """Move aliases from `before` to `after` (None removes) and commit with an audit entry; the
    `announce` (topic, payload) event is recorded in the outbox with the commit. Returns the audit
    entry's key and the outbox record's."""
    txid = uuid.uuid4().hex[:12]
    key, entry = _audit_entry(txid, audit)
    intent = _Intent(txid, before, after, _announcement(txid, model, announce))
    held.check()
    registry.set_model_tag(model, INTENT_TAG, intent.to_json())
    order = [a for a in (PREVIOUS, CHAMPION, CHALLENGER) if after[a] != before[a]]
    try:
        for alias in order:
            held.check()
            if after[alias] is None:
                registry.delete_alias(model, alias)
            else:
                registry.set_alias(model, alias, after[alias])
            crash_point("alias-moved")
        observed = _snapshot(registry, model)
        if observed != after:
            raise PromotionFailed(f"read-back mismatch for {model}: expected aliases {after}, found {observed}")
        held.check()
        registry.set_model_tag(model, key, entry)
        crash_point("audit-written")
    except LockLost as exc:
        # Another process may hold the lock now; its recovery undoes this move from the intent.
        raise PromotionFailed(f"{audit['action']} of {model} stopped: {exc}; the next holder of the lock"
                              f" restores the aliases from the intent") from exc
    except Exception as exc:
        try:
            registry.restore_aliases(model, before)
            # The audit write may have landed with its response lost: the commit point must go too.
            registry.delete_model_tag(model, key)
            registry.delete_model_tag(model, INTENT_TAG)
        except Exception as restore_exc:
            raise PromotionFailed(
                f"{audit['action']} of {model} failed ({exc}); restoring aliases {before} also failed"
                f" ({restore_exc}); the next promotion or rollback of {model} restores them from its"
                f" {INTENT_TAG} tag"
            ) from exc
        raise PromotionFailed(f"{audit['action']} of {model} failed ({exc}); aliases restored to {before}") from exc
    try:
        if intent.announce is not None:
            outbox.record(registry, intent.announce)
            crash_point("outbox-recorded")
        registry.delete_model_tag(model, INTENT_TAG)
    except RegistryError as exc:
        # Committed: the intent stays, and the next holder's recovery records the event and drops it.
        log.warning("%s of %s committed, but closing its intent failed: %s", audit["action"], model, exc)
    return key, intent.announce.key if intent.announce else None


def _announce(registry: Registry, bus: Bus | None, model: str, key: str | None) -> bool:
    """Publish the model's outbox (this move's record and any a crashed process left); True when the
    record `key` went out."""
    if bus is None:
        return False
    try:
        published = outbox.drain(registry, bus, model)
    except RegistryError:
        # The move is committed and its record kept: the next drain publishes it.
        log.exception("could not drain the outbox of %s", model)
        return False
    return key is not None and key in published


def _tag_quietly(registry: Registry, model: str, version: str, tags: dict[str, str]) -> None:
    """Version tags written after commit only annotate; the audit entry already holds the facts."""
    try:
        registry.set_version_tags(model, version, tags)
    except RegistryError:
        log.exception("could not annotate %s version %s", model, version)


def _promote_locked(
    registry: Registry, model: str, version: str, held: HeldLock, *, actor: str, reason: str, manual: bool,
    topic: str | None, decision: Decision | None = None,
) -> tuple[PromotionResult, str | None]:
    """Promote under the held lock; returns the result and the key of its outbox record."""
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
        return PromotionResult(model, "promote", version, before[PREVIOUS], actor, reason, manual, changed=False), None
    after = {
        CHAMPION: version,
        PREVIOUS: before[CHAMPION] if before[CHAMPION] is not None else before[PREVIOUS],
        CHALLENGER: None if before[CHALLENGER] == version else before[CHALLENGER],
    }
    ts = _now()
    announce = topic, ModelPromoted(model=model, version=version, previous_version=before[CHAMPION], actor=actor,
                                    reason=reason, manual=manual)
    key, record = _move(registry, model, held, before, after, {
        "action": "promote", "actor": actor, "reason": reason, "manual": manual, "version": version,
        "from_version": before[CHAMPION], "decision": decision.label if decision else info.decision,
        "reasons": list(decision.reasons) if decision else info.reasons,
    }, announce if topic is not None else None)
    _tag_quietly(registry, model, version, {
        "ctloop.promoted_at": ts.isoformat(), "ctloop.promoted_by": actor, "ctloop.promotion_reason": reason,
        "ctloop.manual": str(manual).lower(),
    })
    result = PromotionResult(model, "promote", version, before[CHAMPION], actor, reason, manual, audit_key=key, ts=ts)
    return result, record


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
) -> PromotionResult:
    """Make `version` the champion (the old one becomes `previous`). Without `manual`, only a version
    whose recorded decision is promote may be promoted."""
    if not reason.strip():
        raise PromotionRefused("a promotion needs a reason")
    topic = _announcing(bus, models_topic)
    registry = _registry(tracking_uri)
    with _locked(registry, model, "promote") as held:
        _recover(registry, model)
        result, record = _promote_locked(registry, model, str(version), held, actor=actor, reason=reason,
                                         manual=manual, topic=topic)
    return replace(result, published=_announce(registry, bus, model, record))


def rollback(
    tracking_uri: str | Registry,
    model: str,
    *,
    actor: str,
    reason: str = "rollback",
    bus: Bus | None = None,
    models_topic: str | None = None,
    manual: bool = True,
    champion: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> PromotionResult:
    """Make `previous` the champion again and drop `previous`, so a second rollback is refused
    instead of flipping back to the version just rolled away from.

    An automatic rollback (the bake window's) passes `manual=False`, the `champion` it judged (refused if
    another version is champion by the time the lock is held) and its `evidence`, kept in the audit entry."""
    topic = _announcing(bus, models_topic)
    registry = _registry(tracking_uri)
    with _locked(registry, model, "roll back") as held:
        _recover(registry, model)
        before = _snapshot(registry, model)
        if before[PREVIOUS] is None:
            raise PromotionRefused(f"cannot roll back {model}: it has no 'previous' version; nothing changed")
        if before[CHAMPION] is None:
            raise PromotionRefused(f"cannot roll back {model}: it has no champion; nothing changed")
        if champion is not None and before[CHAMPION] != champion:
            raise PromotionRefused(f"cannot roll back {model} version {champion}: the champion is now version"
                                   f" {before[CHAMPION]}; nothing changed")
        after = {CHAMPION: before[PREVIOUS], PREVIOUS: None, CHALLENGER: before[CHALLENGER]}
        ts = _now()
        announce = topic, ModelRolledBack(model=model, from_version=before[CHAMPION], to_version=before[PREVIOUS],
                                          actor=actor, reason=reason)
        key, record = _move(registry, model, held, before, after, {
            "action": "rollback", "actor": actor, "reason": reason, "manual": manual, "version": before[PREVIOUS],
            "from_version": before[CHAMPION], **({"evidence": evidence} if evidence is not None else {}),
        }, announce if topic is not None else None)
        _tag_quietly(registry, model, before[CHAMPION], {
            "ctloop.rolled_back_at": ts.isoformat(), "ctloop.rolled_back_by": actor,
            "ctloop.rollback_reason": reason,
        })
    result = PromotionResult(model, "rollback", before[PREVIOUS], before[CHAMPION], actor, reason, manual,
                             audit_key=key, ts=ts)
    return replace(result, published=_announce(registry, bus, model, record))


def settle(tracking_uri: str | Registry, model: str, *, bus: Bus | None = None) -> list[str]:
    """What a restarted promoter, server or CLI runs for a model: finish a move a crashed process left
    (undo it, or close it and record its event), then publish the model's outbox. Returns the keys of
    the outbox records published."""
    registry = _registry(tracking_uri)
    with _locked(registry, model, "settle") as held:
        held.check()
        _recover(registry, model)
    return outbox.drain(registry, bus, model) if bus is not None else []


def note(tracking_uri: str | Registry, model: str, entry: dict[str, Any]) -> str:
    """Add an entry that moves no alias to the model's audit trail (e.g. a bake window closed); returns its key.
    `entry` needs an `action` and an `actor`."""
    missing = {"action", "actor"} - set(entry)
    if missing:
        raise ValueError(f"an audit entry needs {sorted(missing)}")
    return _audit(_registry(tracking_uri), model, entry)


def settle_quietly(tracking_uri: str | Registry, model: str, *, bus: Bus) -> list[str]:
    """`settle` for a process starting up (serving): a model not registered yet, or a registry that does
    not answer, is logged, not raised; the next move or start settles it then."""
    try:
        published = settle(tracking_uri, model, bus=bus)
    except RegistryError as exc:
        log.info("could not settle %s at start: %s", model, exc)
        return []
    if published:
        log.info("announced %d leftover alias move(s) of %s", len(published), model)
    return published


@contextmanager
def _locked(registry: Registry, model: str, what: str) -> Iterator[HeldLock]:
    """The model's lock; a model the registry does not have is a refusal, not a lookup error."""
    try:
        registry.model(model)
    except NotFound as exc:
        raise PromotionRefused(f"cannot {what}: {exc}; nothing changed") from None
    with model_lock(registry, model) as held:
        yield held


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
    registration_id: str | None = None,
) -> tuple[str, PromotionResult | None]:
    """The automatic path: register the challenger, then under the lock promote it if the decision
    still holds against the champion of that moment. Every decision lands in the audit trail.

    If the champion changed since the evaluation, the challenger is judged again against the new
    champion's recorded metrics (given `policy` and the same holdout), else rejected as stale. Given a
    `registration_id` (`lineage_id`), a call again after a crash finds its version and the verdict the
    audit trail already holds on it, and only announces what is pending."""
    announce_to = _announcing(bus, topic)
    registry = _registry(tracking_uri)
    version = register_challenger(
        registry, model, model_uri, provenance=provenance, evaluation=evaluation, decision=decision,
        registration_id=registration_id,
    )
    with model_lock(registry, model) as held:
        _recover(registry, model)
        info = registry.model(model)
        champion = info.aliases.get(CHAMPION)
        judged = _judged(info.audit, version)
        if judged == "reject":
            return version, None
        if judged == "promote":
            # Promoted by this step before its process died: announce what is pending, decide nothing again.
            result, record = PromotionResult(model, "promote", version, None, actor, "promoted before", False,
                                             changed=False), None
        else:
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
            result, record = _promote_locked(
                registry, model, version, held, actor=actor, reason="; ".join(final.reasons), manual=False,
                topic=announce_to, decision=final,
            )
    return version, replace(result, published=_announce(registry, bus, model, record))


def _judged(trail: list[dict[str, Any]], version: str) -> str | None:
    """"promote" or "reject" when the audit trail already holds that verdict on the version (its step run
    again after a crash, or promoted by hand since); None when it was never judged."""
    verdicts = [e["action"] for e in trail if e.get("action") in ("promote", "reject") and e.get("version") == version]
    return verdicts[-1] if verdicts else None

"""The registry side of a bake window (`ctloop.monitors.bake`): which promotion is baking, and its two endings.

A bake is open while the champion's latest promotion (its audit entry) replaced the version now in
`previous` and no audit entry closes it. It ends with an automatic rollback (the audit entry of the
rollback carries the evidence and the bake's id) or with a `bake` entry that keeps the champion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctloop.bus import Bus
from ctloop.deploy.promotion import PromotionRefused, note, rollback
from ctloop.deploy.registry import CHAMPION, PREVIOUS, Registry

log = logging.getLogger(__name__)

BAKE_ACTOR = "ctloop-bake"


@dataclass(frozen=True)
class Baking:
    model: str
    version: str
    previous: str
    opened_at: datetime
    promotion: str


class RegistryBakes:
    """Bakes kept in the registry's aliases and audit trail; what `ctloop.monitors.bake.bake_once` acts through."""

    def __init__(self, tracking_uri: str | Registry, *, bus: Bus | None = None, models_topic: str | None = None):
        self.registry = tracking_uri if isinstance(tracking_uri, Registry) else Registry(tracking_uri)
        self.bus = bus
        self.models_topic = models_topic

    def baking(self, model: str) -> Baking | None:
        info = self.registry.model(model)
        champion, previous = info.aliases.get(CHAMPION), info.aliases.get(PREVIOUS)
        if champion is None or previous is None:
            return None
        audit = info.audit
        promoted = next((e for e in reversed(audit) if e.get("action") == "promote" and e.get("version") == champion),
                        None)
        if promoted is None or promoted.get("from_version") != previous:
            return None
        if any(e.get("bake") == promoted["id"] or (e.get("evidence") or {}).get("bake") == promoted["id"]
               for e in audit):
            return None
        return Baking(model, champion, previous, datetime.fromisoformat(promoted["ts"]), promoted["id"])

    def roll_back(self, baking: Baking, *, reason: str, evidence: dict[str, Any]) -> bool:
        try:
            rollback(self.registry, baking.model, actor=BAKE_ACTOR, reason=reason, manual=False,
                     champion=baking.version, evidence={**evidence, "bake": baking.promotion}, bus=self.bus,
                     models_topic=self.models_topic if self.bus is not None else None)
        except PromotionRefused as exc:
            log.warning("bake of %s version %s: not rolled back: %s", baking.model, baking.version, exc)
            return False
        return True

    def keep(self, baking: Baking, *, reason: str, evidence: dict[str, Any]) -> None:
        note(self.registry, baking.model, {
            "action": "bake", "actor": BAKE_ACTOR, "manual": False, "outcome": "kept", "version": baking.version,
            "from_version": baking.previous, "reason": reason, "bake": baking.promotion, "evidence": evidence,
        })

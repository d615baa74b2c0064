"""Promotion races on a real `mlflow server`: automatic promotions, a manual promotion and a rollback, all at
once. The champion is only ever a version whose decision says promote or a manual promotion with its
reason, and the audit trail records every move as one unbroken chain."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ctloop.deploy.policy import decide
from ctloop.deploy.promotion import PromotionRefused, apply_decision, promote, register_challenger, rollback
from ctloop.deploy.registry import Registry
from tests.deploy.helpers import evaluation
from tests.reliability.aliases import AliasWatcher
from tests.reliability.promotion_case import POLICY, PROVENANCE

pytestmark = [pytest.mark.reliability, pytest.mark.mlflow_server]


def _auto(url: str, model: str, uri: str, accuracy: float, champion: tuple[str, float]) -> Callable:
    def act() -> Any:
        ev = evaluation(model, uri, accuracy, champion)
        return apply_decision(Registry(url), model, uri, ev, decide(ev, POLICY), PROVENANCE, policy=POLICY)
    return act


@pytest.mark.parametrize("round_", [1, 2])
def test_concurrent_automatic_and_manual_promotions_and_a_rollback_keep_the_champion_legitimate(
        round_, mlflow_server, uri):
    url = mlflow_server
    registry = Registry(url)
    model = f"race-{uuid.uuid4().hex[:8]}"
    base = evaluation(model, uri, 0.80)
    v1, _ = apply_decision(registry, model, uri, base, decide(base, POLICY), PROVENANCE, policy=POLICY)
    weak = evaluation(model, uri, 0.5, champion=(v1, 0.8))
    rejected = register_challenger(registry, model, uri, provenance=PROVENANCE, evaluation=weak,
                                   decision=decide(weak, POLICY))
    assert registry.version(model, rejected).decision == "reject"

    actors: dict[str, Callable[[], Any]] = {
        f"auto-{a}": _auto(url, model, uri, a, (v1, 0.8)) for a in (0.79, 0.82, 0.86, 0.9, 0.84)
    }
    actors["manual-hotfix"] = lambda: promote(Registry(url), model, rejected, actor="alice", reason="hotfix INC-7",
                                              manual=True)
    actors["manual-v1"] = lambda: promote(Registry(url), model, v1, actor="carol", reason="pin v1", manual=True)
    actors["rollback"] = lambda: rollback(Registry(url), model, actor="bob", reason="bad canary")
    actors["auto-refused"] = lambda: promote(Registry(url), model, rejected, actor="ctloop", reason="auto",
                                             manual=False)
    start = threading.Barrier(len(actors))

    def run(act: Callable[[], Any]) -> Any:
        start.wait()
        try:
            return act()
        except PromotionRefused as exc:
            return exc

    watcher = AliasWatcher(Registry(url), model)
    watcher.start()
    with ThreadPoolExecutor(len(actors)) as pool:
        outcomes = dict(zip(actors, pool.map(run, actors.values()), strict=True))
    views = watcher.stop()

    assert isinstance(outcomes["auto-refused"], PromotionRefused), "a rejected version is never promoted automatically"
    audit = registry.model(model).audit
    moves = [e for e in audit if e["action"] in ("promote", "rollback")]
    assert not [e for e in audit if e["action"] == "recover"]

    def legitimate(version: str) -> bool:
        manual = any(e["action"] == "promote" and e["manual"] and e["reason"].strip() and e["version"] == version
                     for e in moves)
        return manual or registry.version(model, version).decision == "promote"

    for champion in {view.get("champion") for view in views}:
        assert champion is not None and legitimate(champion), f"illegitimate champion {champion}"
    for e in moves:
        if e["action"] == "promote" and not e["manual"]:
            assert registry.version(model, e["version"]).decision == "promote"

    # One unbroken chain: every move starts from the champion the previous move left.
    champion: str | None = None
    for e in moves:
        assert e["from_version"] == champion, f"a move from {e['from_version']} while {champion} was champion: {e}"
        champion = e["version"]
    assert registry.alias(model, "champion") == champion

    # Every step on record: each successful call has its audit entry, each automatic verdict is recorded.
    keys = {k for k in registry.model(model).tags if k.startswith("ctloop.audit.")}
    for name, outcome in outcomes.items():
        if isinstance(outcome, PromotionRefused):
            continue
        result = outcome[1] if isinstance(outcome, tuple) else outcome
        if result is not None and result.changed:
            assert result.audit_key in keys, f"{name} moved the aliases without an audit entry"
        if isinstance(outcome, tuple):
            version = outcome[0]
            actions = {e["action"] for e in audit if e.get("version") == version}
            assert actions & {"promote", "reject"}, f"{name}: no verdict recorded for {version}"

"""Promotion, rejection, manual promotion and rollback against a real `mlflow server` over HTTP."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading

import pytest

from ctloop.deploy import lock, outbox
from ctloop.deploy.lock import Lease
from ctloop.deploy.policy import decide
from ctloop.deploy.promotion import (
    INTENT_TAG,
    PromotionFailed,
    PromotionRefused,
    apply_decision,
    lineage_id,
    promote,
    register_challenger,
    rollback,
)
from ctloop.deploy.registry import Registry, Retry
from ctloop.embedded_bus import EmbeddedBus
from ctloop.events import ModelPromoted, ModelRolledBack, new_event, parse
from ctloop.modelspec import PromotionPolicy
from tests.deploy.helpers import evaluation

pytestmark = pytest.mark.mlflow_server

POLICY = PromotionPolicy(metric="accuracy", direction="max", min_improvement=0.01)
PROVENANCE = {"event_id": "evt-1", "data_digest": "sha256:abc", "code_version": "git:1234", "run_id": None}


def auto(registry, name, uri, accuracy, *, bus=None, champion=None):
    """What the workflow's promote step does: evaluate against the current champion, decide, apply."""
    if champion is None:
        current = registry.alias(name, "champion")
        champion = (current, registry.version(name, current).metrics["accuracy"]) if current else None
    ev = evaluation(name, uri, accuracy, champion)
    return apply_decision(registry, name, uri, ev, decide(ev, POLICY), PROVENANCE, bus=bus, topic="models",
                          policy=POLICY)


def events(bus: EmbeddedBus) -> list:
    consumer = bus.consumer(["models"], "test")
    try:
        return [parse(m.value) for m in consumer.poll(0.1)]
    finally:
        consumer.close()


def test_first_challenger_becomes_champion_with_provenance(registry, model_name, constant_model_uri, bus):
    version, result = auto(registry, model_name, constant_model_uri, 0.8, bus=bus)

    assert result is not None and result.version == version and result.previous is None
    assert registry.alias(model_name, "champion") == version
    info = registry.version(model_name, version)
    assert info.tags["ctloop.event_id"] == "evt-1"
    assert info.tags["ctloop.data_digest"] == "sha256:abc"
    assert info.tags["ctloop.code_version"] == "git:1234"
    assert info.tags["ctloop.holdout_digest"] == "holdout-1"
    assert info.run_id and info.tags["ctloop.run_id"] == info.run_id
    assert info.provenance == {"event_id": "evt-1", "data_digest": "sha256:abc", "code_version": "git:1234",
                               "run_id": info.run_id}
    assert info.metrics == {"accuracy": 0.8}
    assert info.decision == "promote" and "no champion" in info.reasons[0]
    assert info.tags["ctloop.promoted_by"] == "ctloop"
    [entry] = registry.model(model_name).audit
    assert entry["action"] == "promote" and entry["version"] == version and entry["actor"] == "ctloop"
    [event] = events(bus)
    assert isinstance(event.data, ModelPromoted) and event.data.version == version and not event.data.manual


def test_better_challenger_replaces_champion_and_old_one_becomes_previous(
    registry, model_name, constant_model_uri
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, result = auto(registry, model_name, constant_model_uri, 0.85)

    assert result is not None and result.previous == v1
    aliases = registry.aliases(model_name)
    assert aliases["champion"] == v2 and aliases["previous"] == v1
    assert "challenger" not in aliases
    assert "improved by 0.05" in registry.version(model_name, v2).reasons[0]


def test_worse_challenger_is_rejected_and_stays_challenger(registry, model_name, constant_model_uri, bus):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, result = auto(registry, model_name, constant_model_uri, 0.805, bus=bus)

    assert result is None
    assert registry.aliases(model_name) == {"champion": v1, "challenger": v2}
    info = registry.version(model_name, v2)
    assert info.decision == "reject" and "below the minimum 0.01" in info.reasons[0]
    audit = registry.model(model_name).audit
    assert [(e["action"], e["version"]) for e in audit] == [("promote", v1), ("reject", v2)]
    assert events(bus) == []


def test_rejected_version_is_promoted_only_manually_with_the_reason_recorded(
    registry, model_name, constant_model_uri, bus
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, _ = auto(registry, model_name, constant_model_uri, 0.7)

    with pytest.raises(PromotionRefused, match="decision is reject"):
        promote(registry, model_name, v2, actor="ci", reason="auto", manual=False)
    assert registry.alias(model_name, "champion") == v1

    result = promote(registry, model_name, v2, actor="alice", reason="hotfix for segment B", manual=True,
                     bus=bus, models_topic="models")

    assert result.manual and result.previous == v1 and result.published
    assert registry.aliases(model_name) == {"champion": v2, "previous": v1}
    tags = registry.version(model_name, v2).tags
    assert tags["ctloop.manual"] == "true" and tags["ctloop.promoted_by"] == "alice"
    assert tags["ctloop.promotion_reason"] == "hotfix for segment B"
    last = registry.model(model_name).audit[-1]
    assert (last["action"], last["actor"], last["reason"], last["manual"]) == (
        "promote", "alice", "hotfix for segment B", True)
    [event] = events(bus)
    assert event.data.manual and event.data.actor == "alice" and event.data.previous_version == v1


def test_rollback_restores_previous_and_a_second_rollback_is_refused(
    registry, model_name, constant_model_uri, bus
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, _ = auto(registry, model_name, constant_model_uri, 0.9)

    result = rollback(registry, model_name, actor="bob", reason="p99 regression", bus=bus, models_topic="models")

    assert (result.version, result.previous) == (v1, v2)
    assert registry.aliases(model_name) == {"champion": v1}
    assert registry.version(model_name, v2).tags["ctloop.rolled_back_by"] == "bob"
    last = registry.model(model_name).audit[-1]
    assert (last["action"], last["version"], last["from_version"], last["reason"]) == (
        "rollback", v1, v2, "p99 regression")
    [event] = events(bus)
    assert isinstance(event.data, ModelRolledBack)
    assert (event.data.from_version, event.data.to_version) == (v2, v1)

    audit_before = registry.model(model_name).audit
    with pytest.raises(PromotionRefused, match="no 'previous' version; nothing changed"):
        rollback(registry, model_name, actor="bob")
    assert registry.aliases(model_name) == {"champion": v1}
    assert registry.model(model_name).audit == audit_before


def test_an_automatic_rollback_keeps_its_evidence_and_refuses_when_the_champion_it_judged_moved(
    registry, model_name, constant_model_uri, bus
):
    auto(registry, model_name, constant_model_uri, 0.8)
    v2, _ = auto(registry, model_name, constant_model_uri, 0.9)
    v3, _ = auto(registry, model_name, constant_model_uri, 0.95)
    audit_before = registry.model(model_name).audit

    with pytest.raises(PromotionRefused, match=f"version {v2}: the champion is now version {v3}; nothing changed"):
        rollback(registry, model_name, actor="ctloop-bake", manual=False, champion=v2, evidence={"rows": 1})
    assert registry.model(model_name).audit == audit_before

    evidence = {"metric": "accuracy", "champion_value": 0.61, "previous_value": 0.83, "rows": 240}
    result = rollback(registry, model_name, actor="ctloop-bake", reason="bake: worse", manual=False, champion=v3,
                      evidence=evidence, bus=bus, models_topic="models")
    assert (result.version, result.previous, result.manual) == (v2, v3, False)
    last = registry.model(model_name).audit[-1]
    assert (last["action"], last["manual"], last["evidence"], last["actor"]) == (
        "rollback", False, evidence, "ctloop-bake")
    [event] = events(bus)
    assert (event.data.from_version, event.data.to_version, event.data.reason) == (v3, v2, "bake: worse")


def test_a_note_joins_the_audit_trail_without_moving_an_alias(registry, model_name, constant_model_uri):
    from ctloop.deploy.promotion import note

    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    key = note(registry, model_name, {"action": "bake", "actor": "ctloop-bake", "version": v1, "outcome": "kept"})
    last = registry.model(model_name).audit[-1]
    assert key.startswith("ctloop.audit.") and (last["action"], last["outcome"]) == ("bake", "kept")
    assert registry.aliases(model_name) == {"champion": v1}
    with pytest.raises(ValueError, match=r"needs \['actor'\]"):
        note(registry, model_name, {"action": "bake"})


def test_promoting_a_missing_version_is_refused_and_changes_nothing(
    registry, model_name, constant_model_uri
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    before = registry.model(model_name)

    with pytest.raises(PromotionRefused, match="has no version '42'"):
        promote(registry, model_name, "42", actor="alice", reason="typo", manual=True)

    after = registry.model(model_name)
    assert after.aliases == before.aliases == {"champion": v1}
    assert after.audit == before.audit


def test_a_runs_uri_registers_the_logged_model_of_that_run(registry, model_name, constant_model_uri):
    logged = registry.client.get_logged_model(constant_model_uri.removeprefix("models:/"))
    runs_uri = f"runs:/{logged.source_run_id}/model"

    version, _ = auto(registry, model_name, runs_uri, 0.8)

    info = registry.version(model_name, version)
    assert info.source == constant_model_uri and info.run_id == logged.source_run_id


def test_a_leftover_intent_of_a_committed_move_is_closed_and_its_event_announced_without_undoing_it(
    registry, model_name, constant_model_uri, bus
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, _ = auto(registry, model_name, constant_model_uri, 0.9)
    committed = registry.model(model_name).audit[-1]
    event = new_event(ModelPromoted(model=model_name, version=v2, previous_version=v1, actor="ctloop", reason="r"))
    record = outbox.Record.of(committed["id"], "models", model_name, event)
    # As if the process died after the audit entry (the commit point) but before recording its event
    # and dropping its intent.
    registry.set_model_tag(model_name, INTENT_TAG, json.dumps({
        "txid": committed["id"],
        "before": {"champion": v1, "previous": None, "challenger": v2},
        "after": {"champion": v2, "previous": v1, "challenger": None},
        "announce": record.to_json(),
    }))

    promote(registry, model_name, v2, actor="alice", reason="noop", manual=True, bus=bus, models_topic="models")

    tags = registry.model(model_name).tags
    assert INTENT_TAG not in tags and not [k for k in tags if k.startswith(outbox.OUTBOX_PREFIX)]
    assert registry.aliases(model_name) == {"champion": v2, "previous": v1}
    assert registry.model(model_name).audit[-1] == committed
    [announced] = events(bus)
    assert announced.id == event.id and announced.data.version == v2


def test_a_leftover_intent_of_an_uncommitted_move_is_undone_and_never_announced(
    registry, model_name, constant_model_uri, bus
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    v2, _ = auto(registry, model_name, constant_model_uri, 0.7)
    event = new_event(ModelPromoted(model=model_name, version=v2, previous_version=v1, actor="x", reason="r"))
    # As if the process died after its first alias write, before the audit entry.
    registry.set_model_tag(model_name, INTENT_TAG, json.dumps({
        "txid": "deadbeef0000",
        "before": {"champion": v1, "previous": None, "challenger": v2},
        "after": {"champion": v2, "previous": v1, "challenger": None},
        "announce": outbox.Record.of("deadbeef0000", "models", model_name, event).to_json(),
    }))
    registry.set_alias(model_name, "previous", v1)

    with pytest.raises(PromotionRefused, match="no 'previous'"):
        rollback(registry, model_name, actor="bob", bus=bus, models_topic="models")

    assert registry.aliases(model_name) == {"champion": v1, "challenger": v2}
    assert registry.model(model_name).audit[-1]["action"] == "recover"
    assert INTENT_TAG not in registry.model(model_name).tags
    assert events(bus) == []


def test_an_event_left_in_the_outbox_is_published_by_the_next_drain_with_its_id(
    registry, model_name, constant_model_uri, tmp_path
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    class Unreachable(EmbeddedBus):
        def publish(self, *args, **kwargs):
            raise OSError("broker unreachable")

    down = Unreachable(tmp_path / "down.db")
    try:
        v2, _ = auto(registry, model_name, constant_model_uri, 0.9)
        result = promote(registry, model_name, v1, actor="alice", reason="pin v1", manual=True, bus=down,
                         models_topic="models")
    finally:
        down.close()
    assert result.changed and not result.published
    [kept] = outbox.pending(registry, model_name)

    live = EmbeddedBus(tmp_path / "live.db")
    try:
        assert outbox.drain_all(registry, live) == {model_name: [kept.key]}
        [announced] = events(live)
        assert announced.id == parse(kept.event.encode()).id
        assert (announced.data.version, announced.data.previous_version) == (v1, v2)
        assert outbox.pending(registry, model_name) == []
        assert outbox.drain(registry, live, model_name) == []
    finally:
        live.close()


def _concurrent_promoter(args) -> tuple[str, bool]:
    url, name, uri, accuracy, champion = args
    version, result = auto(Registry(url), name, uri, accuracy, champion=champion)
    return version, result is not None


def test_eight_concurrent_promoters_end_with_the_best_champion_and_a_full_audit_trail(
    mlflow_server, registry, model_name, constant_model_uri
):
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    accuracies = [0.83, 0.86, 0.81, 0.9, 0.84, 0.88, 0.805, 0.85]
    # All evaluated against v1 at the same time, as parallel workflow runs would be; the processes
    # share nothing but the mlflow server, where the lock lives.
    jobs = [(mlflow_server, model_name, constant_model_uri, a, (v1, 0.8)) for a in accuracies]
    with multiprocessing.get_context("fork").Pool(8) as pool:
        outcomes = pool.map(_concurrent_promoter, jobs)

    by_accuracy = dict(zip(accuracies, (v for v, _ in outcomes), strict=True))
    assert registry.alias(model_name, "champion") == by_accuracy[0.9]
    audit = registry.model(model_name).audit
    decided = {e["version"]: e["action"] for e in audit if e["action"] in ("promote", "reject")}
    assert set(decided) == {v1, *by_accuracy.values()}
    assert decided[by_accuracy[0.805]] == "reject"
    for version, promoted in outcomes:
        assert decided[version] == ("promote" if promoted else "reject")
        assert registry.version(model_name, version).decision == decided[version]


def test_registry_killed_during_promotion_leaves_champion_then_restart_and_retry_completes(
    mlflow_server, killable_mlflow_server, model_name, constant_model_uri
):
    observer = Registry(mlflow_server)
    v1, _ = auto(observer, model_name, constant_model_uri, 0.8)
    v2, _ = auto(observer, model_name, constant_model_uri, 0.7)
    server = killable_mlflow_server

    class DiesAfterFirstAliasWrite(Registry):
        def set_alias(self, name: str, alias: str, version: str) -> None:
            super().set_alias(name, alias, version)
            server.kill()

    doomed = DiesAfterFirstAliasWrite(server.url, retry=Retry(attempts=3, base_delay_s=0.1))
    with pytest.raises(PromotionFailed, match=r"restores them from its ctloop\.intent tag"):
        promote(doomed, model_name, v2, actor="alice", reason="try v2", manual=True)

    assert observer.alias(model_name, "champion") == v1
    assert not any(e["action"] == "promote" and e["version"] == v2 for e in observer.model(model_name).audit)

    server.start()
    result = promote(Registry(server.url), model_name, v2, actor="alice", reason="try v2 again", manual=True)

    assert result.previous == v1
    assert observer.aliases(model_name) == {"champion": v2, "previous": v1}
    actions = [e["action"] for e in observer.model(model_name).audit]
    assert actions[-2:] == ["recover", "promote"]



def _lineage_promoter(args) -> None:
    url, name, uri, champion, barrier, results = args
    ev = evaluation(name, uri, 0.9, champion)
    barrier.wait(timeout=60)  # every promoter registers at the same moment, as retried steps on two pods could
    version, result = apply_decision(Registry(url), name, uri, ev, decide(ev, POLICY), PROVENANCE, policy=POLICY,
                                     registration_id=lineage_id(name, PROVENANCE))
    results.put((version, result is not None and result.changed))


def test_concurrent_promoters_of_one_lineage_register_one_version(
    mlflow_server, registry, model_name, constant_model_uri
):
    """Two pods running the promote step of the same (model, data digest, code version) at once, e.g. a
    step retried while the first attempt still runs: one version, judged and promoted once."""
    v1, _ = auto(registry, model_name, constant_model_uri, 0.8)
    racers = 4
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(racers), context.Queue()
    args = (mlflow_server, model_name, constant_model_uri, (v1, 0.8), barrier, results)
    processes = [context.Process(target=_lineage_promoter, args=(args,)) for _ in range(racers)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    versions = [v.version for v in registry.versions(model_name)]
    assert len(versions) == 2, f"one lineage registered {len(versions) - 1} versions: {versions}"
    [v2] = set(versions) - {v1}
    assert {version for version, _ in outcomes} == {v2}
    assert sum(moved for _, moved in outcomes) == 1, "the champion moved once"
    assert registry.alias(model_name, "champion") == v2
    promotions = [e for e in registry.model(model_name).audit if e["action"] == "promote" and e["version"] == v2]
    assert len(promotions) == 1


def test_a_registration_the_registry_stalls_past_the_lease_leaves_one_version_of_the_lineage(
    mlflow_server, killable_mlflow_server, model_name, constant_model_uri, monkeypatch, caplog
):
    """Promoter A's create reaches a registry server that then stops (SIGSTOP) for longer than A's lease;
    promoter B, through another server on the same backend, takes the lock and registers the lineage; the
    stopped server resumes and runs A's create late. One version of the lineage remains, and both get it."""
    monkeypatch.setattr(lock, "DEFAULT_LEASE", Lease(ttl_s=2, renew_every_s=0.3, margin_s=0.6, wait_s=60))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # A's create waits out the stop, as a slow server's
    caplog.set_level(logging.WARNING, logger="ctloop.deploy.promotion")
    server, registration = killable_mlflow_server, lineage_id(model_name, PROVENANCE)
    ev = evaluation(model_name, constant_model_uri, 0.9)
    Registry(mlflow_server).ensure_model(model_name)

    slow = Registry(server.url)
    sent = threading.Event()
    create = slow.client.create_model_version

    def create_then_stop(*args, **kwargs):
        os.killpg(server.process.pid, signal.SIGSTOP)
        sent.set()
        return create(*args, **kwargs)

    slow.client.create_model_version = create_then_stop
    outcome: dict[str, object] = {}

    def promoter_a() -> None:
        try:
            outcome["a"] = register_challenger(slow, model_name, constant_model_uri, provenance=PROVENANCE,
                                               evaluation=ev, decision=decide(ev, POLICY), registration_id=registration)
        except Exception as exc:
            outcome["a"] = exc

    a = threading.Thread(target=promoter_a)
    a.start()
    try:
        assert sent.wait(60), "promoter A never sent its create"
        version_b = register_challenger(Registry(mlflow_server), model_name, constant_model_uri, provenance=PROVENANCE,
                                        evaluation=ev, decision=decide(ev, POLICY), registration_id=registration)
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)
    a.join(60)

    assert outcome["a"] == version_b
    assert [v.version for v in Registry(mlflow_server).registered(model_name, registration)] == [version_b]
    assert [v.version for v in Registry(mlflow_server).versions(model_name)] == [version_b]
    assert "lost during the registration" in caplog.text, "A's create did not outlive its lease: nothing was tested"
    assert "(a create that landed late): deleted" in caplog.text
    assert Registry(mlflow_server).aliases(model_name) == {"challenger": version_b}

"""The story's checks fail exactly when the record lacks what the story promised."""

from ctloop.app.demo.summary import AuditRow, EventRow, RunRow, Summary, VersionRow, story_checks


def _version(n: str, decision: str, caused_by: str | None = "e") -> VersionRow:
    return VersionRow(version=n, aliases=[], metrics={"accuracy": 0.9}, decision=decision, reasons=["r"],
                      provenance={"event_id": caused_by}, trigger="data", caused_by=caused_by)


def _run(trigger: str, version: str | None, status: str = "Succeeded") -> RunRow:
    return RunRow(id=f"run-{trigger}-{version}", trigger=trigger, trigger_event_id="e", status=status,
                  version=version, mlflow_run_id="m", error=None, seconds=1.0)


def _audit(action: str, manual: bool) -> AuditRow:
    return AuditRow(ts="2026-01-01T00:00:00", action=action, version="1", actor="me", manual=manual, reason="why")


def _event(stage: str, decisions: list[str], run_id: str | None) -> EventRow:
    return EventRow(id=f"{stage}-{len(decisions)}-{run_id}", type="ctloop.data.arrived", stage=stage, detail="",
                    decisions=decisions, outcome="", run_id=run_id)


BURST = [_event("burst", ["deferred: window", "coalesced: merged"], None),
         _event("burst", ["deferred: window", "coalesced: merged"], None),
         _event("burst", ["deferred: window", "triggered: run r2"], "r2")]

GOOD = dict(
    versions=[_version("1", "promote"), _version("2", "reject"), _version("3", "promote")],
    runs=[_run("data", "1"), _run("data", "2"), _run("drift", "3")],
    audit=[_audit("promote", False), _audit("promote", True), _audit("rollback", True), _audit("promote", True),
           _audit("rollback", False)],
    drift_events=1,
    alerts=1,
    events=[_event("bootstrap", ["triggered: run r1"], "r1"), *BURST],
)


def _failed(**changes) -> list[str]:
    return [c.name for c in story_checks(**{**GOOD, **changes}) if not c.ok]


def test_the_full_story_passes_every_check():
    assert _failed() == []


def test_two_versions_are_not_enough():
    assert _failed(versions=GOOD["versions"][:2]) == ["at least three versions"]


def test_no_rejection_fails():
    versions = [_version(str(i), "promote") for i in range(1, 4)]
    assert _failed(versions=versions) == ["a rejected challenger"]


def test_a_drift_run_that_failed_or_made_no_version_does_not_count():
    assert _failed(runs=[*GOOD["runs"][:2], _run("drift", None, "Failed")]) == [
        "a drift-triggered run made a version"]


def test_automatic_promotions_are_not_manual_ones():
    assert _failed(audit=[_audit("promote", False), _audit("rollback", False)]) == ["a manual promotion"]


def test_missing_rollback_fails():
    assert _failed(audit=GOOD["audit"][:2]) == ["a rollback", "an automatic rollback by the bake window"]


def test_manual_rollbacks_alone_are_not_the_bake_windows():
    assert _failed(audit=GOOD["audit"][:4]) == ["an automatic rollback by the bake window"]


def test_alerts_must_be_one_per_episode():
    assert _failed(alerts=2) == ["one drift event and one alert"]
    assert _failed(drift_events=0) == ["one drift event and one alert"]


def test_a_version_without_a_causing_event_breaks_lineage():
    versions = [*GOOD["versions"][:2], _version("3", "promote", caused_by=None)]
    checks = {c.name: c for c in story_checks(**{**GOOD, "versions": versions})}
    lineage = checks["every version traces to the event that caused it"]
    assert not lineage.ok
    assert "3" in lineage.detail


def test_a_burst_that_became_two_runs_is_not_coalesced():
    split = [BURST[0], _event("burst", ["triggered: run rx"], "rx"), BURST[2]]
    assert _failed(events=split) == ["the burst coalesced into one run"]


def test_a_story_stopped_early_is_not_ok_even_when_its_checks_pass():
    summary = Summary(start="starting clean", model="m", home="/h", bus="embedded", tracking_uri="sqlite:///x",
                      champion="3", events=[], runs=[], versions=[], audit=[], alerts=1, reports=[],
                      checks=story_checks(**GOOD), next_steps=[])
    assert summary.ok
    assert not summary.model_copy(update={"error": "stage 3 (drift) failed: no drift"}).ok

"""Registry outage during promotion (a real `mlflow server` SIGKILLed mid-promotion, then restarted): the
workflow step is retried, and the aliases end fully moved; the champion is never half-moved on the way."""

from __future__ import annotations

import random
import time
import uuid

import pytest
from hera.workflows import DAG, Parameter, WorkflowTemplate, script

from ctloop.deploy.policy import decide
from ctloop.deploy.promotion import apply_decision, register_challenger
from ctloop.deploy.registry import Registry
from ctloop.settings import Settings
from ctloop.workflows.local.engine import LocalEngine
from ctloop.workflows.template import transient_retry
from tests.deploy.helpers import evaluation
from tests.reliability import promote_steps
from tests.reliability.aliases import AliasWatcher
from tests.reliability.promotion_case import POLICY, PROVENANCE

pytestmark = [pytest.mark.reliability, pytest.mark.mlflow_server]


def promotion_workflow() -> WorkflowTemplate:
    step = script(constructor="runner", image="python:3.11", retry_strategy=transient_retry())(
        promote_steps.promote_version)
    names = ("model", "version", "tracking-uri")
    with WorkflowTemplate(name="promote-only", entrypoint="main",
                          arguments=[Parameter(name=n) for n in names]) as template, DAG(name="main"):
        step(name="promote", arguments={n: f"{{{{workflow.parameters.{n}}}}}" for n in names})
    return template


def test_a_registry_killed_mid_promotion_is_retried_and_the_aliases_move_fully(
        mlflow_server, killable_mlflow_server, uri, tmp_path):
    rng = random.Random(2)
    observer = Registry(mlflow_server)
    model = f"outage-{uuid.uuid4().hex[:8]}"
    first = evaluation(model, uri, 0.8)
    v1, _ = apply_decision(observer, model, uri, first, decide(first, POLICY), PROVENANCE, policy=POLICY)
    second = evaluation(model, uri, 0.9, champion=(v1, 0.8))
    v2 = register_challenger(observer, model, uri, provenance=PROVENANCE, evaluation=second,
                             decision=decide(second, POLICY))
    before = observer.aliases(model)
    assert before == {"champion": v1, "challenger": v2}

    server = killable_mlflow_server
    engine = LocalEngine(Settings(home=tmp_path / "home"), template=promotion_workflow())

    watcher = AliasWatcher(observer, model)
    watcher.start()
    handle = engine.start({"model": model, "version": v2, "tracking-uri": server.url}, key=f"promote-{model}",
                          wait=False)
    deadline = time.monotonic() + 30
    while engine.run(handle.run_id).step("promote") is None:
        assert time.monotonic() < deadline, "the promote step never started"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.02))  # somewhere inside the promotion's dozen registry calls
    server.kill()
    time.sleep(rng.uniform(0.5, 2.0))
    server.start()
    while engine.status(handle.run_id) == "Running":
        assert time.monotonic() < deadline + 120, "the promotion did not finish after the registry came back"
        time.sleep(0.1)
    views = watcher.stop()

    run = engine.run(handle.run_id)
    assert run.status == "Succeeded", run.error
    assert run.step("promote").attempts >= 2, "the outage hit the promotion, and the engine retried it"
    assert observer.aliases(model) == {"champion": v2, "previous": v1}, "fully moved"
    for view in views:
        assert view.get("champion") in (v1, v2)
        if view.get("champion") == v2:
            assert view.get("previous") == v1, f"champion moved without previous: {view}"
    audit = observer.model(model).audit
    promotions = [e for e in audit if e["action"] == "promote" and e["version"] == v2]
    assert len(promotions) == 1 and promotions[0]["from_version"] == v1
    assert {e["action"] for e in audit} <= {"promote", "recover"}

"""The workflow's promote step retried after its process died once it had registered and promoted (the engine
starts an interrupted run again with the same inputs): the retry finds the version it registered and the move
it made, and changes nothing in the registry."""

from __future__ import annotations

import pytest

from ctloop.deploy.policy import decide
from ctloop.deploy.promotion import apply_decision
from ctloop.deploy.registry import Registry
from ctloop.embedded_bus import EmbeddedBus
from ctloop.modelspec import PromotionPolicy
from tests.deploy.helpers import evaluation

pytestmark = pytest.mark.mlflow_server

POLICY = PromotionPolicy(metric="accuracy", direction="max", min_improvement=0.01)


def step(registry: Registry, model: str, uri: str, accuracy: float, champion: tuple[str, float] | None, bus):
    """The promote step of one run: its training run's model, evaluated against `champion`."""
    run_id = registry.resolve(uri)[2]
    provenance = {"event_id": f"evt-{run_id}", "data_digest": f"sha256:{run_id}", "code_version": "git:1",
                  "run_id": run_id}
    ev = evaluation(model, uri, accuracy, champion)
    return apply_decision(registry, model, uri, ev, decide(ev, POLICY), provenance, bus=bus, topic="models",
                          policy=POLICY)


def test_a_retried_promote_step_registers_nothing_new_and_moves_no_alias(
        mlflow_server, model_name, constant_model_uri, other_model_uri, tmp_path):
    registry = Registry(mlflow_server)
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        v1, _ = step(registry, model_name, constant_model_uri, 0.8, None, bus)
        v2, first = step(registry, model_name, other_model_uri, 0.9, (v1, 0.8), bus)
        again, retried = step(registry, model_name, other_model_uri, 0.9, (v1, 0.8), bus)
    finally:
        bus.close()

    assert first is not None and first.changed
    assert again == v2, "the retry registered its training run's model a second time"
    assert [v.version for v in registry.versions(model_name)] == [v1, v2]
    assert retried is not None and not retried.changed
    assert registry.aliases(model_name) == {"champion": v2, "previous": v1}
    assert registry.version(model_name, v2).decision == "promote", "the champion was judged against itself"
    trail = registry.model(model_name).audit
    assert [(e["action"], e["version"]) for e in trail] == [("promote", v1), ("promote", v2)]

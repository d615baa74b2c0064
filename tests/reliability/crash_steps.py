"""Cheap evaluate and promote steps for the crash-point matrix: the retrain template's decide-then-act shape
(evaluate reads the champion and records it as its output; promote registers through
`deploy.promotion.apply_decision` and announces on the models topic), with no data and no scoring.

The version registered is the logged model at `CTLOOP_TEST_MODEL_URI`; its lineage is the run's."""

# No `from __future__ import annotations`: Hera reads the annotations at build time.

from typing import Annotated

from hera.workflows import Parameter
from hera.workflows.io import Output

MODEL_URI_ENV = "CTLOOP_TEST_MODEL_URI"


class Evaluated(Output):
    champion_version: Annotated[str, Parameter(name="champion-version")]


class Promoted(Output):
    version: Annotated[str, Parameter(name="version")]


def evaluate(model: Annotated[str, Parameter(name="model")]) -> Evaluated:
    from ctloop.deploy.registry import CHAMPION, Registry
    from ctloop.workflows.step_context import current_settings
    from ctloop.workflows.steps import transient_exits

    with transient_exits():
        champion = Registry(current_settings().tracking_uri).alias(model, CHAMPION)
    return Evaluated(champion_version=champion or "")


def promote(model: Annotated[str, Parameter(name="model")],
            data_digest: Annotated[str, Parameter(name="data-digest")],
            event_id: Annotated[str, Parameter(name="event-id")],
            code_version: Annotated[str, Parameter(name="code-version")],
            champion_version: Annotated[str, Parameter(name="champion-version")]) -> Promoted:
    """Every challenger beats the champion it was evaluated against, so each run promotes."""
    import os

    from ctloop.bus_factory import open_bus
    from ctloop.deploy.policy import Decision
    from ctloop.deploy.promotion import apply_decision, lineage_id
    from ctloop.evaluation import Evaluation
    from ctloop.workflows.step_context import current_settings
    from ctloop.workflows.steps import transient_exits
    from tests.reliability.promotion_case import POLICY

    settings = current_settings()
    evaluation = Evaluation(model=model, challenger_uri=os.environ[MODEL_URI_ENV], challenger={"accuracy": 0.9},
                            champion_version=champion_version or None,
                            champion={"accuracy": 0.5} if champion_version else None,
                            holdout_digest="sha256:holdout", holdout_rows=10)
    provenance = {"event_id": event_id, "data_digest": data_digest, "code_version": code_version, "run_id": None}
    bus = open_bus(settings)
    try:
        with transient_exits():
            version, _ = apply_decision(
                settings.tracking_uri, model, os.environ[MODEL_URI_ENV], evaluation,
                Decision(True, ("accuracy 0.9 beats the champion",)), provenance, bus=bus,
                topic=settings.topics.models, policy=POLICY, registration_id=lineage_id(model, provenance),
            )
    finally:
        bus.close()
    return Promoted(version=version)

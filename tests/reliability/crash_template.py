"""The crash-point matrix's retrain template: the production template's workflow parameters and its
train -> evaluate -> promote shape, with a memoized train that costs nothing and the cheap evaluate and
promote steps of `crash_steps` (real registry, real bus)."""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate, models, script

from ctloop.workflows.template import PARAMETERS, transient_retry
from tests.reliability import cheap_steps, crash_steps


def crash_retrain() -> WorkflowTemplate:
    step = {"constructor": "runner", "image": "python:3.11", "retry_strategy": transient_retry()}
    train = script(**step, memoize=models.Memoize(
        key="train-{{inputs.parameters.key}}", max_age="1h",
        cache=models.Cache(config_map=models.LocalObjectReference(name="crash-cache"))))(cheap_steps.train)
    evaluate = script(**step)(crash_steps.evaluate)
    promote = script(**step)(crash_steps.promote)
    wf = "{{workflow.parameters.%s}}"
    with WorkflowTemplate(name="crash-retrain", entrypoint="retrain",
                          arguments=[Parameter(name=p, value="") for p in PARAMETERS]) as template, \
            DAG(name="retrain"):
        trained = train(name="train", arguments={"model": wf % "model", "data-digest": wf % "data-digest",
                                                 "seconds": "0", "key": wf % "idempotency-key"})
        evaluated = evaluate(name="evaluate", arguments={"model": wf % "model"})
        promoted = promote(name="promote", arguments={
            "model": wf % "model", "data-digest": wf % "data-digest", "event-id": wf % "event-id",
            "code-version": wf % "code-version",
            "champion-version": "{{tasks.evaluate.outputs.parameters.champion-version}}"})
        trained >> evaluated >> promoted
    return template

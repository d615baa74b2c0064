"""A retrain template with the production template's workflow parameters and one cheap, memoized train step.

The sensor submits to it exactly as to the real one (same parameters, same idempotency key), and the
local engine records it in the same run store; only the training itself is a sleep.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate, models, script

from ctloop.workflows.template import PARAMETERS, transient_retry
from tests.reliability import cheap_steps

TRAIN_STEP = "train"


def cheap_retrain(train_s: float) -> WorkflowTemplate:
    train = script(
        constructor="runner", image="python:3.11", retry_strategy=transient_retry(),
        memoize=models.Memoize(key="train-{{inputs.parameters.key}}", max_age="1h",
                               cache=models.Cache(config_map=models.LocalObjectReference(name="cheap-cache"))),
    )(cheap_steps.train)
    wf = "{{workflow.parameters.%s}}"
    with WorkflowTemplate(name="cheap-retrain", entrypoint="retrain",
                          arguments=[Parameter(name=p, value="") for p in PARAMETERS]) as template, \
            DAG(name="retrain"):
        train(name=TRAIN_STEP, arguments={"model": wf % "model", "data-digest": wf % "data-digest",
                                          "seconds": str(train_s), "key": wf % "idempotency-key"})
    return template

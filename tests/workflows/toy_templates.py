"""Small test-only Hera templates for the engine's mechanics (the retrain template is tested on its own)."""

from __future__ import annotations

from hera.workflows import DAG, Parameter, RetryStrategy, WorkflowTemplate, models, script

from tests.workflows import toy_steps

RUNNER = {"constructor": "runner", "image": "python:3.11"}


def _exit_dag(w: WorkflowTemplate) -> None:
    record = script(**RUNNER)(toy_steps.record_status)
    with DAG(name="finished"):
        record(name="record", arguments={"status": "{{workflow.status}}", "log": "{{workflow.parameters.log}}"})
    w.on_exit = "finished"


def pipeline(*, fail_second: bool = False, memoize: bool = False) -> WorkflowTemplate:
    """double → add (or fail), passing a parameter and an artifact; exit handler records the status."""
    double = script(
        **RUNNER,
        memoize=models.Memoize(key="double-{{inputs.parameters.value}}", max_age="1h",
                               cache=models.Cache(config_map=models.LocalObjectReference(name="toy-cache")))
        if memoize else None,
    )(toy_steps.double)
    second = script(**RUNNER)(toy_steps.fail if fail_second else toy_steps.add)
    log = "{{workflow.parameters.log}}"
    with WorkflowTemplate(name="toy", entrypoint="main",
                          arguments=[Parameter(name="value", value="3"), Parameter(name="log")]) as w:
        with DAG(name="main"):
            a = double(name="double", arguments={"value": "{{workflow.parameters.value}}", "log": log})
            if fail_second:
                second(name="second", arguments={"log": log}, depends="double")
            else:
                second(name="second", depends="double", arguments=[
                    Parameter(name="doubled", value="{{tasks.double.outputs.parameters.doubled}}"),
                    Parameter(name="log", value=log), a.get_artifact("blob")])
        _exit_dag(w)
    return w


def gated(*, when: str) -> WorkflowTemplate:
    """double, then add only `when` holds."""
    double = script(**RUNNER)(toy_steps.double)
    add = script(**RUNNER)(toy_steps.add)
    log = "{{workflow.parameters.log}}"
    with WorkflowTemplate(name="gated", entrypoint="main", arguments=[Parameter(name="log")]) as w, DAG(name="main"):
        a = double(name="double", arguments={"value": "2", "log": log})
        add(name="add", depends="double", when=when, arguments=[
            Parameter(name="doubled", value="{{tasks.double.outputs.parameters.doubled}}"),
            Parameter(name="log", value=log), a.get_artifact("blob")])
    return w


def flaky(*, limit: int, expression: str | None = "asInt(lastRetry.exitCode) == 75") -> WorkflowTemplate:
    step = script(**RUNNER, retry_strategy=RetryStrategy(
        limit=limit, retry_policy="Always", expression=expression,
        backoff=models.Backoff(duration="10ms", factor=2, max_duration="5s")))(toy_steps.flaky)
    with WorkflowTemplate(name="flaky", entrypoint="main",
                          arguments=[Parameter(name="failures"), Parameter(name="log")]) as w:
        with DAG(name="main"):
            step(name="flaky", arguments={"failures": "{{workflow.parameters.failures}}",
                                          "log": "{{workflow.parameters.log}}"})
        _exit_dag(w)
    return w


def blocking(*, once: bool = False) -> WorkflowTemplate:
    """double, then a step that blocks for a minute (the first time only, `once`): something to kill."""
    double = script(**RUNNER)(toy_steps.double)
    block = script(**RUNNER, name="block")(toy_steps.block_once if once else toy_steps.block)
    log = "{{workflow.parameters.log}}"
    with WorkflowTemplate(name="blocking", entrypoint="main", arguments=[Parameter(name="log")]) as w:
        with DAG(name="main"):
            double(name="double", arguments={"value": "1", "log": log})
            block(name="block", depends="double", arguments={"log": log})
        _exit_dag(w)
    return w


def blocking_once() -> WorkflowTemplate:
    return blocking(once=True)


def locked() -> WorkflowTemplate:
    """One step that holds the mutex `toy-<name>` while it runs."""
    step = script(**RUNNER, synchronization=models.Synchronization(
        mutexes=[models.Mutex(name="toy-{{inputs.parameters.name}}")]), inputs=[Parameter(name="name")])(
        toy_steps.enter)
    with WorkflowTemplate(name="locked", entrypoint="main",
                          arguments=[Parameter(name="log"), Parameter(name="name", value="m")]) as w, DAG(name="main"):
        step(name="enter", arguments={"log": "{{workflow.parameters.log}}", "name": "{{workflow.parameters.name}}"})
    return w


def deadline(seconds: int, *, whole_workflow: bool = False) -> WorkflowTemplate:
    """A blocking step under a deadline of `seconds`: its own, or the workflow's."""
    block = script(**RUNNER, active_deadline_seconds=None if whole_workflow else seconds)(toy_steps.block)
    with WorkflowTemplate(name="deadline", entrypoint="main", arguments=[Parameter(name="log")],
                          active_deadline_seconds=seconds if whole_workflow else None) as w:
        with DAG(name="main"):
            block(name="block", arguments={"log": "{{workflow.parameters.log}}"})
        _exit_dag(w)
    return w


def chain(length: int, *, memoize: bool = False) -> WorkflowTemplate:
    """`length` do-nothing steps in a line: the benchmark's subject."""
    memo = models.Memoize(key="{{workflow.parameters.key}}-{{inputs.parameters.i}}", max_age="1h",
                          cache=models.Cache(config_map=models.LocalObjectReference(name="bench")))
    step = script(**RUNNER, name="nothing", memoize=memo if memoize else None,
                  inputs=[Parameter(name="i")])(toy_steps.nothing)
    with WorkflowTemplate(name="chain", entrypoint="main", arguments=[Parameter(name="key", value="k")]) as w, \
            DAG(name="main"):
        previous = None
        for i in range(length):
            task = step(name=f"s{i}", arguments={"i": str(i)}, depends=previous)
            previous = task.name
    return w

"""The local engine runs a Hera template's DAG with Argo's semantics, and records every run durably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctloop.settings import Settings
from ctloop.workflows.engine import AlreadyRan
from ctloop.workflows.local.engine import LocalEngine
from ctloop.workflows.local.mutex import FileLock, mutex
from tests.workflows import toy_templates

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log"


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_parameters_and_artifacts_flow_in_dependency_order_and_the_exit_handler_sees_success(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline())
    handle = engine.start({"log": str(log), "value": "4"}, key="k", model="toy", trigger="manual",
                          trigger_event_id="evt-1")
    assert handle.status == "Succeeded"
    assert lines(log) == ["double 4", "add 8 4", "exit Succeeded"]
    run = engine.run(handle.run_id)
    assert (run.idempotency_key, run.model, run.trigger, run.trigger_event_id) == ("k", "toy", "manual", "evt-1")
    assert [(s.name, s.status) for s in run.steps] == [
        ("double", "Succeeded"), ("second", "Succeeded"), ("onExit.record", "Succeeded")]
    assert run.step("second").outputs == {"total": "12"}
    assert Path(run.step("double").artifacts["blob"]).is_file()
    assert all(s.started_at and s.finished_at and s.finished_at >= s.started_at for s in run.steps)
    assert engine.status(handle.run_id) == "Succeeded"


def test_a_failed_step_fails_the_run_omits_its_dependents_and_still_runs_the_exit_handler(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline(fail_second=True))
    handle = engine.start({"log": str(log)}, key="k")
    assert handle.status == "Failed"
    assert lines(log) == ["double 3", "fail", "exit Failed"]
    run = engine.run(handle.run_id)
    assert run.step("second").status == "Failed"
    assert "RuntimeError: this step always fails" in run.step("second").error
    assert "second" in run.error


@pytest.mark.parametrize(("when", "ran"), [("{{tasks.double.outputs.parameters.doubled}} == 4", True),
                                           ("{{tasks.double.outputs.parameters.doubled}} > 100", False)])
def test_when_decides_whether_a_task_runs(settings, log, when, ran):
    engine = LocalEngine(settings, template=toy_templates.gated(when=when))
    handle = engine.start({"log": str(log)}, key="k")
    assert handle.status == "Succeeded"
    assert engine.run(handle.run_id).step("add").status == ("Succeeded" if ran else "Skipped")
    assert ("add 4 2" in lines(log)) is ran


def test_a_transient_failure_is_retried_with_backoff_until_it_succeeds(settings, log):
    engine = LocalEngine(settings, template=toy_templates.flaky(limit=3))
    handle = engine.start({"failures": "2", "log": str(log)}, key="k")
    assert handle.status == "Succeeded"
    assert lines(log) == ["flaky"] * 3 + ["exit Succeeded"]
    assert engine.run(handle.run_id).step("flaky").attempts == 3


def test_retries_stop_at_the_limit(settings, log):
    engine = LocalEngine(settings, template=toy_templates.flaky(limit=2))
    handle = engine.start({"failures": "10", "log": str(log)}, key="k")
    assert handle.status == "Failed"
    assert lines(log) == ["flaky"] * 3 + ["exit Failed"]
    assert "exited with code 75" in engine.run(handle.run_id).step("flaky").error


def test_a_failure_the_retry_expression_does_not_match_is_not_retried(settings, log):
    engine = LocalEngine(settings, template=toy_templates.flaky(limit=3, expression="asInt(lastRetry.exitCode) == 3"))
    assert engine.start({"failures": "1", "log": str(log)}, key="k").status == "Failed"
    assert lines(log) == ["flaky", "exit Failed"]


def test_a_memoized_step_is_served_from_the_cache_with_its_outputs(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline(memoize=True))
    first = engine.start({"log": str(log)}, key="first")
    second = LocalEngine(settings, template=toy_templates.pipeline(memoize=True)).start({"log": str(log)}, key="second")
    assert (first.status, second.status) == ("Succeeded", "Succeeded")
    assert lines(log) == ["double 3", "add 6 3", "exit Succeeded", "add 6 3", "exit Succeeded"]
    cached = engine.run(second.run_id).step("double")
    assert cached.cached and cached.outputs == {"doubled": "6"}
    other = engine.start({"log": str(log), "value": "5"}, key="third")
    assert other.status == "Succeeded" and not engine.run(other.run_id).step("double").cached


def test_a_key_that_succeeded_is_refused_and_a_failed_one_may_run_again(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline())
    done = engine.start({"log": str(log)}, key="same")
    with pytest.raises(AlreadyRan) as refused:
        engine.start({"log": str(log)}, key="same")
    assert refused.value.run_id == done.run_id
    failing = LocalEngine(settings, template=toy_templates.pipeline(fail_second=True))
    assert failing.start({"log": str(log)}, key="retry-me").status == "Failed"
    assert failing.start({"log": str(log)}, key="retry-me").status == "Failed"


def test_unknown_or_missing_workflow_parameters_are_named(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline())
    with pytest.raises(ValueError, match="unknown workflow parameters \\['colour'\\]"):
        engine.start({"log": str(log), "colour": "red"}, key="k")
    with pytest.raises(ValueError, match="workflow parameter 'log' is required"):
        engine.start({}, key="k")


def _engine_process(settings: Settings, template: str, key: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workflows.engine_process", str(settings.home), template, key, str(log)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )


def test_concurrent_submissions_of_one_key_from_several_processes_run_it_once(settings, log):
    LocalEngine(settings, template=toy_templates.pipeline())
    processes = [_engine_process(settings, "pipeline", "contended", log) for _ in range(3)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in processes)
    assert outcomes == ["ran Succeeded", "refused", "refused"]
    assert lines(log).count("double 3") == 1


def test_a_run_whose_engine_was_killed_is_failed_on_restart_and_its_exit_handler_runs(settings, log):
    process = _engine_process(settings, "blocking", "crashy", log)
    try:
        deadline = time.monotonic() + 60
        while "block" not in lines(log):
            assert process.poll() is None and time.monotonic() < deadline, "engine process never reached the step"
            time.sleep(0.05)
        with pytest.raises(AlreadyRan):
            LocalEngine(settings, template=toy_templates.blocking()).start({"log": str(log)}, key="crashy")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    engine = LocalEngine(settings, template=toy_templates.blocking())
    [run] = engine.runs.list()
    assert run.status == "Failed" and "interrupted" in run.error
    steps = engine.run(run.id)
    assert steps.step("double").status == "Succeeded"
    assert steps.step("block").status == "Failed"
    assert lines(log)[-1] == "exit Failed"
    assert engine.recover() == []


def test_an_interrupted_run_is_started_again_reusing_the_steps_that_had_finished(settings, log):
    process = _engine_process(settings, "blocking_once", "resumable", log)
    try:
        _wait_for(lambda: "block" in lines(log), process)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    engine = LocalEngine(settings, template=toy_templates.blocking_once(), retry_interrupted=1)
    _wait_for(lambda: any(r.status == "Succeeded" for r in engine.runs.list()))
    interrupted, retried = sorted(engine.runs.list(), key=lambda r: r.created_at)
    assert interrupted.status == "Failed" and "interrupted" in interrupted.error
    assert retried.idempotency_key == "resumable"
    assert lines(log) == ["double 1", "block", "exit Failed", "block", "exit Succeeded"]
    assert engine.run(retried.id).step("double").cached
    with pytest.raises(AlreadyRan):
        engine.start({"log": str(log)}, key="resumable")


def _wait_for(condition, process: subprocess.Popen[str] | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process is None or process.poll() is None, "the engine process ended early"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_steps_can_run_in_their_own_processes(settings, log):
    engine = LocalEngine(settings, template=toy_templates.pipeline(), step_mode="subprocess")
    handle = engine.start({"log": str(log)}, key="k")
    assert handle.status == "Succeeded"
    assert lines(log) == ["double 3", "add 6 3", "exit Succeeded"]


def test_a_step_past_its_deadline_is_killed_and_fails_the_run(settings, log):
    engine = LocalEngine(settings, template=toy_templates.deadline(1), step_mode="subprocess")
    handle = engine.start({"log": str(log)}, key="k")
    assert handle.status == "Failed"
    assert "deadline" in engine.run(handle.run_id).step("block").error
    assert lines(log)[-1] == "exit Failed"


@pytest.mark.parametrize("whole_workflow", [False, True], ids=["step", "workflow"])
def test_an_in_process_step_past_a_deadline_fails_the_run(settings, log, whole_workflow):
    engine = LocalEngine(settings, template=toy_templates.deadline(1, whole_workflow=whole_workflow))
    handle = engine.start({"log": str(log)}, key="k")
    assert handle.status == "Failed"
    assert "deadline" in engine.run(handle.run_id).step("block").error
    assert lines(log) == ["block", "exit Failed"]


def test_a_step_waits_for_its_mutex(settings, log):
    engine = LocalEngine(settings, template=toy_templates.locked())
    with mutex(settings.home / "workflows" / "locks", "toy-m"):
        handle = engine.start({"log": str(log)}, key="k", wait=False)
        time.sleep(0.5)
        assert lines(log) == [] and engine.status(handle.run_id) == "Running"
    _wait_for(lambda: engine.status(handle.run_id) == "Succeeded")
    assert lines(log) == ["enter"]


def test_a_mutex_is_exclusive_across_open_files(tmp_path):
    first, second = FileLock(tmp_path / "m.lock"), FileLock(tmp_path / "m.lock")
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    first.release()
    assert second.acquire(blocking=False)
    second.release()

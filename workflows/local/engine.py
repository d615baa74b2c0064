"""The embedded engine: runs the production WorkflowTemplate on this machine.

It interprets the template Hera builds (the same object `render` writes as YAML), never a second
definition: DAG order from `depends`, `when`, parameter and artifact passing (artifacts as local
files), `retryStrategy`, `memoize` (SQLite instead of a ConfigMap, same key), `synchronization`
mutexes (machine-wide file locks), `activeDeadlineSeconds`, and the `onExit` handler, which runs
after success and failure alike.

Each run is recorded in the run store. While a run executes, its process holds an exclusive lock
on a per-run file; a run found Running whose lock is free belonged to a process that died, and is
marked Failed (and its exit handler run) by the next engine to start, which then starts it again under
the same key, in the background, if `retry_interrupted` allows: the new run reuses the steps the
interrupted one had finished (recorded as cached) and runs the rest.

Steps run in this process in a worker thread (fast), each in a child process (`step_mode=
"subprocess"`), or each in the container image the template names (`step_mode="container"`, see
`container.py`: what the cluster runs, on this machine). An in-process step that overruns its deadline
is reported failed and abandoned: a thread cannot be killed, so such a step's side effects may still
complete; a child process or container is killed.
"""

from __future__ import annotations

import contextvars
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hera.workflows import WorkflowTemplate
from hera.workflows.models import DAGTask, Template, WorkflowSpec

from ctloop.crashpoints import crash_point
from ctloop.settings import Settings
from ctloop.workflows.arguments import run_key, workflow_arguments
from ctloop.workflows.engine import AlreadyRan, RunHandle, RunRequest, RunStatus
from ctloop.workflows.local.container import ContainerRunner
from ctloop.workflows.local.durations import seconds
from ctloop.workflows.local.expressions import ExpressionError, is_true, names_in, substitute
from ctloop.workflows.local.invoke import StepFailed, StepOutputs, call
from ctloop.workflows.local.memoize import MemoCache
from ctloop.workflows.local.mutex import FileLock, lock_path, mutex
from ctloop.workflows.local.retry import Attempt, plain, retry_delay
from ctloop.workflows.local.run_store import RunRecord, RunStore
from ctloop.workflows.step_context import use_settings

StepMode = Literal["inprocess", "subprocess", "container"]
EXIT_HANDLER = "onExit"
INTERRUPTED = "interrupted: the engine process running it stopped before it finished"
_DEPENDS_SUFFIXES = {
    "Succeeded": ("Succeeded",), "Failed": ("Failed",), "Errored": ("Error",), "Skipped": ("Skipped",),
    "Omitted": ("Omitted",), "Daemoned": (), "AnySucceeded": ("Succeeded",), "AllFailed": ("Failed",),
}


class WorkflowError(RuntimeError):
    """The template asks for something this engine cannot do; the message says what."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str
    error: str | None = None


class LocalEngine:
    def __init__(self, settings: Settings, *, template: WorkflowTemplate | None = None,
                 step_mode: StepMode = "inprocess", retry_interrupted: int = 0) -> None:
        """`retry_interrupted`: how many times a run interrupted by its engine's death is started again.
        Only a long-lived engine (the sensor's) should allow it: the retry runs in this process."""
        if template is None:
            from ctloop.workflows.template import retrain_template

            template = retrain_template(settings)
        built = template.build()
        self.settings = settings
        self.name: str = built.metadata.name or "workflow"
        self.spec: WorkflowSpec = built.spec
        self.templates: dict[str, Template] = {t.name: t for t in self.spec.templates or [] if t.name}
        self.step_mode = step_mode
        self._containers = ContainerRunner(settings, config_maps={"ctloop-specs": settings.home / "specs"})
        self.retry_interrupted = retry_interrupted
        self._root = settings.home / "workflows"
        self.runs = RunStore(settings.state_db)
        self._memo = MemoCache(settings.state_db)
        self.recover()

    # --- submitting --------------------------------------------------------------------------------

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        """Run the retrain workflow for `request`; raises AlreadyRan when its key is running or succeeded."""
        key = run_key(request)
        return self.start(workflow_arguments(request, key), key=key, model=request.model,
                          trigger=request.trigger, trigger_event_id=request.trigger_event_id, wait=wait)

    def start(self, arguments: dict[str, str], *, key: str, model: str | None = None, trigger: str | None = None,
              trigger_event_id: str | None = None, wait: bool = True) -> RunHandle:
        """Run the template with these workflow parameters under idempotency key `key`."""
        self.recover()
        parameters = self._workflow_parameters(arguments)
        run_id, lock = self._claim(parameters, key, model, trigger, trigger_event_id)
        if not wait:
            self._background(run_id, parameters, lock, {})
            return RunHandle(run_id=run_id, idempotency_key=key, status="Running")
        status = self._execute(run_id, parameters, lock)
        return RunHandle(run_id=run_id, idempotency_key=key, status=status)

    def _claim(self, parameters: dict[str, str], key: str, model: str | None, trigger: str | None,
               trigger_event_id: str | None) -> tuple[str, FileLock]:
        run_id = f"{self.name}-{secrets.token_hex(5)}"
        lock = FileLock(self._run_lock(run_id))
        lock.acquire()
        try:
            self.runs.claim(run_id, key, template=self.name, parameters=parameters, model=model, trigger=trigger,
                            trigger_event_id=trigger_event_id)
        except BaseException:
            lock.release()
            lock.path.unlink(missing_ok=True)
            raise
        crash_point("run-key-claimed")
        return run_id, lock

    def _background(self, run_id: str, parameters: dict[str, str], lock: FileLock,
                    done: dict[str, StepOutputs]) -> None:
        threading.Thread(target=self._execute, args=(run_id, parameters, lock, done), daemon=True,
                         name=f"run-{run_id}").start()

    def status(self, run_id: str) -> RunStatus:
        return self.runs.get(run_id).status  # type: ignore[return-value]

    def run(self, run_id: str) -> RunRecord:
        return self.runs.get(run_id)

    def recover(self) -> list[str]:
        """Fail the runs whose engine process died mid-run, run their exit handlers, and start them again
        if `retry_interrupted` allows; returns the ids of the failed runs."""
        recovered = []
        for run_id in self.runs.running():
            lock = FileLock(self._run_lock(run_id))
            if not lock.acquire(blocking=False):
                continue
            try:
                if self.runs.fail_if_running(run_id, INTERRUPTED):
                    record = self.runs.get(run_id)
                    failures = [{"displayName": s.name, "message": s.error or INTERRUPTED, "phase": "Failed"}
                                for s in record.steps if s.status == "Failed"]
                    outcome = self._exit_handler(run_id, record.parameters, "Failed", failures, deadline=None)
                    if outcome.error:
                        self.runs.finish(run_id, "Failed", f"{INTERRUPTED}; exit handler: {outcome.error}")
                    recovered.append(run_id)
            finally:
                lock.release()
                lock.path.unlink(missing_ok=True)
        for run_id in recovered:
            self._retry(run_id)
        return recovered

    def _retry(self, run_id: str) -> None:
        """Start an interrupted run again under its key, unless its key was interrupted too often or runs.
        The new run reuses the steps the interrupted one had finished, with their recorded outputs."""
        record = self.runs.get(run_id)
        interruptions = sum(1 for r in self.runs.list(limit=10_000, model=record.model)
                            if r.idempotency_key == record.idempotency_key and (r.error or "").startswith(INTERRUPTED))
        if interruptions > self.retry_interrupted:
            return
        done = {s.name: StepOutputs(s.outputs, s.artifacts) for s in record.steps
                if s.status == "Succeeded" and not s.name.startswith(f"{EXIT_HANDLER}.")}
        with suppress(AlreadyRan):
            new_id, lock = self._claim(record.parameters, record.idempotency_key, record.model, record.trigger,
                                       record.trigger_event_id)
            self._background(new_id, record.parameters, lock, done)

    # --- running -----------------------------------------------------------------------------------

    def _workflow_parameters(self, arguments: dict[str, str]) -> dict[str, str]:
        declared = {p.name: p for p in (self.spec.arguments.parameters or [])} if self.spec.arguments else {}
        unknown = sorted(set(arguments) - set(declared))
        if unknown:
            raise ValueError(f"unknown workflow parameters {unknown}; {self.name} declares {sorted(declared)}")
        values = {}
        for name, param in declared.items():
            value = arguments.get(name, param.value if param.value is not None else param.default)
            if value is None:
                raise ValueError(f"workflow parameter {name!r} is required by {self.name}")
            values[name] = str(value)
        return values

    def _execute(self, run_id: str, parameters: dict[str, str], lock: FileLock,
                 done: dict[str, StepOutputs] | None = None) -> RunStatus:
        try:
            limit = seconds(plain(self.spec.active_deadline_seconds))  # type: ignore[arg-type]
            deadline = None if limit is None else time.monotonic() + limit
            context = self._globals(run_id, parameters)
            failures: list[dict[str, str]] = []
            try:
                outcome = self._run_template(run_id, self.spec.entrypoint or "", context, "", failures, deadline,
                                             done or {})
            except (WorkflowError, ExpressionError, ValueError) as exc:
                outcome = _Outcome("Error", str(exc))
            status = outcome.status if outcome.status in ("Succeeded", "Failed", "Error") else "Failed"
            handler = self._exit_handler(run_id, parameters, status, failures, deadline=None)
            error = outcome.error
            if handler.error:
                status, error = "Failed", "; ".join(filter(None, [error, f"exit handler: {handler.error}"]))
            self.runs.finish(run_id, status, error)
            return status  # type: ignore[return-value]
        finally:
            lock.release()
            lock.path.unlink(missing_ok=True)

    def _exit_handler(self, run_id: str, parameters: dict[str, str], status: str,
                      failures: list[dict[str, str]], deadline: float | None) -> _Outcome:
        if not self.spec.on_exit:
            return _Outcome("Succeeded")
        context = self._globals(run_id, parameters)
        context["workflow.status"] = status
        context["workflow.failures"] = json.dumps(failures)
        try:
            return self._run_template(run_id, self.spec.on_exit, context, f"{EXIT_HANDLER}.", [], deadline)
        except (WorkflowError, ExpressionError, ValueError) as exc:
            return _Outcome("Error", str(exc))

    def _globals(self, run_id: str, parameters: dict[str, str]) -> dict[str, str]:
        context = {"workflow.name": run_id, "workflow.namespace": "local", "workflow.uid": run_id}
        context.update({f"workflow.parameters.{k}": v for k, v in parameters.items()})
        return context

    def _template(self, name: str) -> Template:
        template = self.templates.get(name)
        if template is None:
            raise WorkflowError(f"template {name!r} is not defined in {self.name}")
        return template

    def _run_template(self, run_id: str, name: str, context: dict[str, str], prefix: str,
                      failures: list[dict[str, str]], deadline: float | None,
                      done: dict[str, StepOutputs] | None = None) -> _Outcome:
        template = self._template(name)
        if template.dag is None:
            raise WorkflowError(f"template {name!r}: only a DAG can be an entrypoint or exit handler locally")
        tasks = {t.name: t for t in template.dag.tasks}
        states: dict[str, str] = {}
        for task in _topological(tasks):
            node = f"{prefix}{task.name}"
            if deadline is not None and time.monotonic() > deadline:
                self.runs.step_finished(run_id, node, "Omitted", error="workflow exceeded activeDeadlineSeconds")
                states[task.name] = "Omitted"
                failures.append({"displayName": node, "message": "workflow exceeded activeDeadlineSeconds",
                                 "phase": "Failed"})
                continue
            if not _depends_met(task, states):
                states[task.name] = "Omitted"
                self.runs.step_finished(run_id, node, "Omitted")
                continue
            if task.when and not is_true(substitute(task.when, context)):
                states[task.name] = "Skipped"
                self.runs.step_finished(run_id, node, "Skipped")
                continue
            if done and node in done:
                outcome, outputs = _Outcome("Succeeded"), done[node]
                self.runs.step_finished(run_id, node, "Succeeded", outputs=outputs.parameters,
                                        artifacts=outputs.artifacts, cached=True)
            else:
                outcome, outputs = self._run_task(run_id, node, task, context, deadline)
            states[task.name] = outcome.status
            if outcome.status != "Succeeded":
                failures.append({"displayName": node, "message": outcome.error or "", "phase": outcome.status,
                                 "templateName": task.template or ""})
                continue
            context.update({f"tasks.{task.name}.outputs.parameters.{k}": v for k, v in outputs.parameters.items()})
            context.update({f"tasks.{task.name}.outputs.artifacts.{k}": v for k, v in outputs.artifacts.items()})
        failed = [f for f in failures if f["displayName"].startswith(prefix)]
        if failed:
            return _Outcome("Failed", "; ".join(f"{f['displayName']}: {f['message']}" for f in failed))
        return _Outcome("Succeeded")

    def _run_task(self, run_id: str, node: str, task: DAGTask, context: dict[str, str],
                  deadline: float | None) -> tuple[_Outcome, StepOutputs]:
        template = self._template(task.template or "")
        try:
            parameters, artifacts = self._inputs(task, template, context)
            scope = {**context, **{f"inputs.parameters.{k}": v for k, v in parameters.items()}}
            memo = self._memo_key(template, scope)
        except (ExpressionError, WorkflowError) as exc:
            self.runs.step_finished(run_id, node, "Error", error=str(exc))
            return _Outcome("Error", str(exc)), StepOutputs()
        if memo is not None:
            hit = self._memo.get(memo[0], memo[1], max_age_s=memo[2])
            if hit is not None:
                outputs = StepOutputs(hit["parameters"], hit["artifacts"])
                self.runs.step_finished(run_id, node, "Succeeded", outputs=outputs.parameters,
                                        artifacts=outputs.artifacts, cached=True)
                return _Outcome("Succeeded"), outputs
        with ExitStack() as held:
            for name in sorted(self._mutex_names(template, scope)):
                held.enter_context(mutex(self._root / "locks", name))
            outcome, outputs, attempts = self._attempts(run_id, node, template, parameters, artifacts, deadline)
        self.runs.step_finished(run_id, node, outcome.status, outputs=outputs.parameters, artifacts=outputs.artifacts,
                                error=outcome.error, attempts=attempts)
        crash_point("step-output-written")
        if memo is not None and outcome.status == "Succeeded":
            self._memo.put(memo[0], memo[1], {"parameters": outputs.parameters, "artifacts": outputs.artifacts},
                           run_id)
        return outcome, outputs

    def _attempts(self, run_id: str, node: str, template: Template, parameters: dict[str, str],
                  artifacts: dict[str, str], deadline: float | None) -> tuple[_Outcome, StepOutputs, int]:
        first = time.monotonic()
        number = 0
        while True:
            number += 1
            self.runs.step_started(run_id, node, number)
            began = time.monotonic()
            try:
                out_dir = self._root / "runs" / run_id / "artifacts" / node / str(number)
                return _Outcome("Succeeded"), self._call(template, parameters, artifacts, out_dir, deadline), number
            except StepFailed as exc:
                status = "Error" if exc.exit_code < 0 else "Failed"
                attempt = Attempt(number, status, exc.exit_code, str(exc), time.monotonic() - began)
                delay = retry_delay(template.retry_strategy, attempt, time.monotonic() - first)
                if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
                    return _Outcome(status, str(exc)), StepOutputs(), number
                time.sleep(delay)

    def _inputs(self, task: DAGTask, template: Template,
                context: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        given = {p.name: substitute(str(p.value), context) for p in (task.arguments.parameters or [])
                 if p.value is not None} if task.arguments else {}
        parameters = {}
        for declared in (template.inputs.parameters or []) if template.inputs else []:
            if declared.name in given:
                parameters[declared.name] = given[declared.name]
            elif declared.value is not None or declared.default is not None:
                fallback = declared.value if declared.value is not None else declared.default
                parameters[declared.name] = substitute(str(fallback), context)
            else:
                raise WorkflowError(f"task {task.name!r}: input parameter {declared.name!r} has no value")
        artifacts = {}
        for artifact in (task.arguments.artifacts or []) if task.arguments else []:
            if artifact.from_ is None:
                raise WorkflowError(f"task {task.name!r}: artifact {artifact.name!r} needs `from` locally")
            artifacts[artifact.name] = substitute(artifact.from_, context)
        return parameters, artifacts

    def _memo_key(self, template: Template, scope: dict[str, str]) -> tuple[str, str, float | None] | None:
        memoize = template.memoize
        if memoize is None:
            return None
        return memoize.cache.config_map.name or "", substitute(memoize.key, scope), seconds(memoize.max_age)

    def _mutex_names(self, template: Template, scope: dict[str, str]) -> list[str]:
        sync = template.synchronization
        if sync is None:
            return []
        if sync.semaphores:
            raise WorkflowError(f"template {template.name!r}: semaphores are not supported locally")
        return [substitute(m.name, scope) for m in sync.mutexes or [] if m.name]

    def _call(self, template: Template, parameters: dict[str, str], artifacts: dict[str, str], out_dir: Path,
              deadline: float | None) -> StepOutputs:
        entrypoint = _entrypoint(template)
        timeouts = [seconds(plain(template.active_deadline_seconds))]  # type: ignore[arg-type]
        if deadline is not None:
            timeouts.append(max(0.0, deadline - time.monotonic()))
        timeout = min((t for t in timeouts if t is not None), default=None)
        if self.step_mode == "container":
            inputs = {f"inputs.parameters.{k}": v for k, v in parameters.items()}
            image = substitute((template.script.image if template.script else None) or "", inputs)
            return self._containers.run(template, image, parameters, artifacts, out_dir, timeout)
        if self.step_mode == "subprocess":
            return self._call_subprocess(entrypoint, parameters, artifacts, out_dir, timeout)
        return self._call_inprocess(entrypoint, parameters, artifacts, out_dir, timeout)

    def _call_inprocess(self, entrypoint: str, parameters: dict[str, str], artifacts: dict[str, str],
                        out_dir: Path, timeout: float | None) -> StepOutputs:
        result: list[StepOutputs | BaseException] = []

        def target() -> None:
            with use_settings(self.settings):
                try:
                    result.append(call(entrypoint, parameters, artifacts, out_dir))
                except BaseException as exc:
                    result.append(exc)

        worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise StepFailed(f"step exceeded its deadline of {timeout:.3g}s", -1)
        outcome = result[0]
        if isinstance(outcome, BaseException):
            if isinstance(outcome, StepFailed):
                raise outcome
            raise StepFailed(f"{type(outcome).__name__}: {outcome}", 1) from outcome
        return outcome

    def _call_subprocess(self, entrypoint: str, parameters: dict[str, str], artifacts: dict[str, str],
                         out_dir: Path, timeout: float | None) -> StepOutputs:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
            request, result = Path(scratch) / "request.json", Path(scratch) / "result.json"
            request.write_text(json.dumps({
                "entrypoint": entrypoint, "parameters": parameters, "artifacts": artifacts, "out_dir": str(out_dir),
                "settings": self.settings.model_dump(mode="json"),
            }))
            process = subprocess.Popen(
                [sys.executable, "-m", "ctloop.workflows.local.step_process", str(request), str(result)],
                start_new_session=True)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise StepFailed(f"step exceeded its deadline of {timeout:.3g}s and was killed", -1) from None
            if not result.is_file():
                raise StepFailed(f"step process ended with code {code} without a result", code if code > 0 else -1)
            data = json.loads(result.read_text())
        if code != 0:
            raise StepFailed(data.get("error", f"exited with code {code}"), code)
        return StepOutputs(data["parameters"], data["artifacts"])

    def _run_lock(self, run_id: str) -> Path:
        return lock_path(self._root / "runs", run_id)


def _entrypoint(template: Template) -> str:
    args = template.script.args if template.script else None
    if not args or "-e" not in args or args[args.index("-e") - 1] != "hera.workflows.runner":
        raise WorkflowError(f"template {template.name!r} is not a Hera runner script; only those run locally")
    return args[args.index("-e") + 1]


def _dependencies(task: DAGTask) -> set[str]:
    names = set(task.dependencies or [])
    if task.depends:
        names.update(name.split(".", 1)[0] for name in names_in(task.depends))
    return names


def _topological(tasks: dict[str, DAGTask]) -> list[DAGTask]:
    """Kahn's algorithm, ties broken by declaration order so runs are reproducible."""
    order: list[DAGTask] = []
    done: set[str] = set()
    pending = list(tasks)
    for name in pending:
        unknown = _dependencies(tasks[name]) - set(tasks)
        if unknown:
            raise WorkflowError(f"task {name!r} depends on unknown tasks {sorted(unknown)}")
    while pending:
        ready = next((n for n in pending if _dependencies(tasks[n]) <= done), None)
        if ready is None:
            raise WorkflowError(f"dependency cycle among tasks {pending}")
        order.append(tasks[ready])
        done.add(ready)
        pending.remove(ready)
    return order


def _depends_met(task: DAGTask, states: dict[str, str]) -> bool:
    if task.dependencies and not all(states.get(d) in ("Succeeded", "Skipped") for d in task.dependencies):
        return False
    if not task.depends:
        return True

    def lookup(name: str) -> bool:
        base, _, suffix = name.partition(".")
        state = states.get(base)
        if not suffix:
            return state in ("Succeeded", "Skipped")
        if suffix not in _DEPENDS_SUFFIXES:
            raise WorkflowError(f"task {task.name!r}: unknown result {suffix!r} in depends {task.depends!r}")
        return state in _DEPENDS_SUFFIXES[suffix]

    return is_true(task.depends, lookup)

"""The distributed engine: submits a Workflow that references the retrain WorkflowTemplate to an Argo Server.

The Workflow's name is derived from the idempotency key, so Argo itself refuses a second submit of
the same key (409 AlreadyExists → AlreadyRan). Unlike the local run store, that includes a key whose
earlier run failed: retry it with `argo retry`/`argo resubmit`, or delete the old Workflow first.
"""

from __future__ import annotations

import re
import time

from hera.exceptions import AlreadyExists, NotFound
from hera.workflows import WorkflowsService
from hera.workflows.models import (
    Arguments,
    ObjectMeta,
    Parameter,
    Workflow,
    WorkflowCreateRequest,
    WorkflowSpec,
    WorkflowTemplateRef,
)

from ctloop.settings import Settings
from ctloop.workflows.arguments import run_key, workflow_arguments, workflow_name
from ctloop.workflows.engine import FINAL_STATUSES, AlreadyRan, RunHandle, RunNotFound, RunRequest, RunStatus
from ctloop.workflows.template import TEMPLATE_NAME

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class ArgoEngine:
    def __init__(self, settings: Settings, *, poll_interval_s: float = 5.0, timeout_s: float = 6 * 3600) -> None:
        self.settings = settings
        self.namespace = settings.argo.namespace
        self.service = WorkflowsService(host=settings.argo.host, token=settings.argo.token,
                                        namespace=settings.argo.namespace, verify_ssl=settings.argo.verify_ssl)
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s

    def workflow(self, request: RunRequest, key: str) -> Workflow:
        """The Workflow object submitted for `request`: a reference to the template plus its parameters."""
        labels = {"app.kubernetes.io/part-of": "ctloop", "ctloop.io/idempotency-key": key,
                  "ctloop.io/trigger": _NOT_DNS.sub("-", request.trigger.lower())[:63].strip("-") or "manual"}
        annotations = {"ctloop.io/model": request.model}
        if request.trigger_event_id:
            annotations["ctloop.io/event-id"] = request.trigger_event_id
        return Workflow(
            metadata=ObjectMeta(name=workflow_name(request.model, key), namespace=self.namespace, labels=labels,
                                annotations=annotations),
            spec=WorkflowSpec(
                workflow_template_ref=WorkflowTemplateRef(name=TEMPLATE_NAME),
                arguments=Arguments(parameters=[Parameter(name=k, value=v)
                                                for k, v in workflow_arguments(request, key).items()]),
            ),
        )

    def submit(self, request: RunRequest, *, wait: bool = True) -> RunHandle:
        key = run_key(request)
        workflow = self.workflow(request, key)
        name = workflow.metadata.name or ""
        try:
            created = self.service.create_workflow(WorkflowCreateRequest(workflow=workflow), namespace=self.namespace)
        except AlreadyExists:
            raise AlreadyRan(key, name) from None
        status = _phase(created)
        if wait:
            status = self._wait(name)
        return RunHandle(run_id=created.metadata.name or name, idempotency_key=key, status=status)

    def status(self, run_id: str) -> RunStatus:
        """The Workflow's phase; RunNotFound (a LookupError) when Argo has no such Workflow."""
        try:
            return _phase(self.service.get_workflow(run_id, namespace=self.namespace))
        except NotFound:
            raise RunNotFound(f"no workflow {run_id!r} in namespace {self.namespace!r}") from None

    def _wait(self, name: str) -> RunStatus:
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = self.status(name)
            if status in FINAL_STATUSES or time.monotonic() > deadline:
                return status
            time.sleep(self.poll_interval_s)


def _phase(workflow: Workflow) -> RunStatus:
    phase = workflow.status.phase if workflow.status else None
    return phase if phase in ("Pending", "Running", "Succeeded", "Failed", "Error") else "Pending"  # type: ignore[return-value]

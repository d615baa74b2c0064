"""A RunRequest as the retrain template's workflow parameters, the run's idempotency key, and the name
a run has on Argo.

Both engines and the sensors use this, so a run has the same key, parameters and name locally and on Argo.
"""

from __future__ import annotations

import json
import re
import uuid

from ctloop.version import code_version
from ctloop.workflows.engine import RunRequest, idempotency_key

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def run_key(request: RunRequest, version: str | None = None) -> str:
    """The key the request carries, else model + data digest + code version + params. Without a digest the
    data is named by its URI and the triggering event, so a redelivered event is still refused while a new
    manual run is not."""
    if request.idempotency_key:
        return request.idempotency_key
    data = request.data_digest or f"uri:{request.data_uri}#event:{request.trigger_event_id or uuid.uuid4()}"
    return idempotency_key(request.model, data, version or code_version(), request.params)


def workflow_arguments(request: RunRequest, key: str, version: str | None = None) -> dict[str, str]:
    return {
        "model": request.model,
        "data-uri": request.data_uri,
        "event-id": request.trigger_event_id or "",
        "trigger": request.trigger,
        "data-digest": request.data_digest or "",
        "idempotency-key": key,
        "code-version": version or code_version(),
        "params": json.dumps(request.params, sort_keys=True),
    }


def workflow_name(model: str, key: str) -> str:
    """The same name for the same key, at most 63 characters (Argo copies it into a label):
    `retrain-<model slug>-<key[:20]>`. Argo refuses a second Workflow of that name, so a key runs once there."""
    slug = _NOT_DNS.sub("-", model.lower()).strip("-")[:34].rstrip("-") or "model"
    return f"retrain-{slug}-{key[:20]}"

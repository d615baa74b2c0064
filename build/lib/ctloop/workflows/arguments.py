"""A RunRequest as the retrain template's workflow parameters, and the run's idempotency key.

Both engines use this, so a run has the same key and parameters locally and on Argo.
"""

from __future__ import annotations

import json
import uuid

from ctloop.version import code_version
from ctloop.workflows.engine import RunRequest, idempotency_key


def run_key(request: RunRequest, version: str | None = None) -> str:
    """model + data digest + code version + params. Without a digest the data is named by its URI and the
    triggering event, so a redelivered event is still refused while a new manual run is not."""
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

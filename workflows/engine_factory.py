"""Which engine runs workflows, as the settings say."""

from __future__ import annotations

from ctloop.settings import Settings
from ctloop.workflows.engine import Engine


def open_engine(settings: Settings, *, retry_interrupted: int = 0) -> Engine:
    """Argo's, or the local engine, which starts a run its process's death interrupted again up to
    `retry_interrupted` times (see `LocalEngine`)."""
    if settings.engine == "argo":
        from ctloop.workflows.argo_engine import ArgoEngine

        return ArgoEngine(settings)
    from ctloop.workflows.local.engine import LocalEngine

    return LocalEngine(settings, retry_interrupted=retry_interrupted)

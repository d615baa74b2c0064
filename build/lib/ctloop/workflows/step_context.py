"""The settings a step function sees: the engine's when run locally, the environment's in a pod."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ctloop.settings import Settings

_current: ContextVar[Settings | None] = ContextVar("ctloop_step_settings", default=None)


def current_settings() -> Settings:
    """In a pod nothing is set and the settings come from CTLOOP_* variables (the ConfigMap)."""
    return _current.get() or Settings()


@contextmanager
def use_settings(settings: Settings) -> Iterator[None]:
    token = _current.set(settings)
    try:
        yield
    finally:
        _current.reset(token)

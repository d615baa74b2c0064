"""Argo's retryStrategy, as a pure decision: retry this failed attempt or not, and after how long."""

from __future__ import annotations

from dataclasses import dataclass

from hera.workflows.models import RetryStrategy

from ctloop.workflows.local.durations import seconds
from ctloop.workflows.local.expressions import is_true


@dataclass(frozen=True, slots=True)
class Attempt:
    """How an attempt ended: `status` is Failed (the step's own failure) or Error (it could not run)."""

    number: int
    status: str
    exit_code: int
    message: str
    duration_s: float


def plain(value: object) -> object:
    """Hera's IntOrString wrapper (a pydantic RootModel) as its int or str."""
    return getattr(value, "root", value)


def _int(value: object, default: int) -> int:
    value = plain(value)
    return default if value is None else int(str(value))


def retry_delay(strategy: RetryStrategy | None, attempt: Attempt, elapsed_s: float) -> float | None:
    """Seconds to wait before the next attempt, or None when the strategy says stop."""
    if strategy is None or attempt.number > _int(strategy.limit, 0):
        return None
    policy = strategy.retry_policy or "OnFailure"
    allowed = {"Always": ("Failed", "Error"), "OnFailure": ("Failed",), "OnError": ("Error",),
               "OnTransientError": ("Error",)}.get(policy)
    if allowed is None:
        raise ValueError(f"unknown retryPolicy {policy!r}")
    if attempt.status not in allowed:
        return None
    if strategy.expression:
        names = {
            "lastRetry.exitCode": str(attempt.exit_code),
            "lastRetry.status": attempt.status,
            "lastRetry.duration": str(attempt.duration_s),
            "lastRetry.message": attempt.message,
        }
        if not is_true(strategy.expression, names):
            return None
    backoff = strategy.backoff
    if backoff is None:
        return 0.0
    factor = float(str(plain(backoff.factor) or 1))
    delay = (seconds(backoff.duration) or 0.0) * factor ** (attempt.number - 1)
    cap = seconds(backoff.cap)
    if cap is not None:
        delay = min(delay, cap)
    limit = seconds(backoff.max_duration)
    if limit is not None and elapsed_s + delay > limit:
        return None
    return delay

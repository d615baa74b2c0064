"""Which failures are worth another try: the one classification that every workflow step's retry and every
client's bounded retry loop use.

Transient: connection failures and timeouts, HTTP 5xx and throttling (429), MLflow's error codes for a busy
or failing server, and any `TransientError` (a service that stayed down for a whole retry budget), also
when it is only the cause of the failure at hand (a promotion that failed because the registry was down).
"""

from __future__ import annotations

TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                             "RESOURCE_EXHAUSTED"})


class TransientError(Exception):
    """A failure another attempt later may not repeat: a dependency that did not answer in time."""


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or any exception it was raised from, is transient."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TransientError) or is_transient_call(seen):
            return True
        seen = seen.__cause__
    return False


def is_transient_call(exc: BaseException) -> bool:
    """Whether one failed call (its causes aside) is worth repeating."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429 or exc.error_code in TRANSIENT_CODES
    if isinstance(exc, MlflowException):
        return exc.error_code in TRANSIENT_CODES or "API request to" in str(exc)
    return isinstance(exc, OSError | TimeoutError)

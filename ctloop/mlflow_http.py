"""How long an MLflow call may take when the tracking server does not answer.

MLflow's HTTP client retries each call up to 7 times with backoff of up to minutes, so a command against a
registry that is down would hang for minutes. ctloop owns its retries instead (the registry layer's bounded
loop, a workflow step's retry policy), so each call gets one attempt and a timeout.
"""

from __future__ import annotations

import os
import re

DEFAULT_TIMEOUT_S = 10


def bound_mlflow_http(timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
    """One attempt per MLflow HTTP call, `timeout_s` at most. Explicit environment settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


def no_answer(exc: BaseException) -> bool:
    """True when an MLflow error says the server gave no answer at all (refused, reset, timed out)."""
    return "API request to" in str(exc) and "failed with exception" in str(exc)


def brief(exc: BaseException, limit: int = 300) -> str:
    """An MLflow error in a few words: for no answer, the socket's reason (`connection refused`), not the URL
    and urllib3's retry story around it."""
    text = str(exc)
    if no_answer(exc):
        reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)|(timed out)", text)
        if reason:
            return f"no answer ({(reason.group(1) or reason.group(2)).strip()})"
    return text[:limit]

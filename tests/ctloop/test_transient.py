"""What counts as transient: the one classification behind every step's retry and every client's retries."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from ctloop.transient import TransientError, is_transient, is_transient_call


class ServiceDown(TransientError):
    pass


@pytest.mark.parametrize(("exc", "transient"), [
    (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
    (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}), False),
    (MlflowException("API request to http://x failed with exception ConnectionError"), True),
    (MlflowException("bad model name", error_code=INVALID_PARAMETER_VALUE), False),
    (MlflowException("unexpected server error"), True),  # MLflow's default code is INTERNAL_ERROR
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (ValueError("bad"), False),
])
def test_one_failed_call_is_transient_for_outages_and_throttling_only(exc, transient):
    assert is_transient_call(exc) is transient
    assert is_transient(exc) is transient


def test_a_failure_caused_by_a_service_that_stayed_down_is_transient():
    try:
        try:
            raise ServiceDown("registry down for the whole retry budget")
        except ServiceDown as cause:
            raise RuntimeError("promotion failed") from cause
    except RuntimeError as exc:
        assert not is_transient_call(exc)
        assert is_transient(exc)


def test_a_failure_with_an_unrelated_cause_is_not_transient():
    try:
        try:
            raise KeyError("model")
        except KeyError as cause:
            raise RuntimeError("promotion failed") from cause
    except RuntimeError as exc:
        assert not is_transient(exc)

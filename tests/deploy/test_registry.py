"""The registry layer: bounded retries on a dead registry, what counts as transient, the embedded SQL store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException, RestException

from ctloop.deploy.promotion import PromotionFailed, promote, rollback
from ctloop.deploy.registry import Registry, RegistryUnavailable, Retry
from ctloop.transient import is_transient
from tests.fixtures.mlflow_server import free_port


def test_a_dead_registry_fails_after_the_bounded_retries_naming_the_operation():
    registry = Registry(f"http://127.0.0.1:{free_port()}", retry=Retry(attempts=3, base_delay_s=0.01))
    with pytest.raises(RegistryUnavailable, match=r"get model m failed 3 times"):
        registry.aliases("m")


def test_retry_delays_grow_exponentially_up_to_the_cap():
    assert Retry(attempts=6, base_delay_s=0.5, max_delay_s=3).delays() == [0.5, 1.0, 2.0, 3, 3]


@pytest.mark.parametrize(("exc", "transient"), [
    (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
    (RestException({"error_code": "INTERNAL_ERROR", "message": "db locked"}), True),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}), False),
    (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), False),
    (MlflowException("API request to http://x failed with exception ConnectionError"), True),
    (ConnectionRefusedError(), True),
    (ValueError("bad"), False),
])
def test_what_counts_as_transient(exc, transient):
    assert is_transient(exc) is transient


def test_a_promotion_that_failed_for_an_outage_is_transient_for_the_workflow_retry():
    try:
        try:
            raise RegistryUnavailable("down")
        except RegistryUnavailable as cause:
            raise PromotionFailed("promote failed") from cause
    except PromotionFailed as exc:
        assert is_transient(exc)


def test_promotion_and_rollback_on_the_embedded_sqlite_registry(tmp_path: Path):
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "model").mkdir()
    v1, v2 = (registry.create_version("m", str(tmp_path / "model"), run_id=None, tags={}).version for _ in range(2))

    promote(registry, "m", v1, actor="a", reason="first", manual=True)
    promote(registry, "m", v2, actor="a", reason="second", manual=True)
    assert registry.aliases("m") == {"champion": v2, "previous": v1}
    rollback(registry, "m", actor="a")
    assert registry.aliases("m") == {"champion": v1}
    assert [e["action"] for e in registry.model("m").audit] == ["promote", "promote", "rollback"]

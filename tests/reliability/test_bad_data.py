"""Bad training data through the real retrain workflow (local engine, real `mlflow server`, S3 on loopback):
the run fails at validation with a message naming the problem, and the champion stays where it was."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ctloop.deploy.registry import Registry
from ctloop.modelspec import save_spec
from ctloop.settings import Settings
from ctloop.workflows.engine import RunRequest
from ctloop.workflows.local.engine import LocalEngine
from tests.trainer.conftest import make_frame, make_spec

pytestmark = [pytest.mark.reliability, pytest.mark.mlflow_server, pytest.mark.s3]


@pytest.fixture(scope="module")
def model() -> str:
    return f"bad-data-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-data")


@pytest.fixture(scope="module")
def settings(home: Path, mlflow_server: str, s3_endpoint: str, model: str) -> Settings:
    settings = Settings(home=home / "home", mlflow_tracking_uri=mlflow_server, s3_endpoint_url=s3_endpoint)
    save_spec(make_spec(name=model, epochs=1, hidden=(4,)), settings)
    return settings


@pytest.fixture(scope="module")
def champion(settings: Settings, home: Path, model: str, mlflow_server: str) -> tuple[LocalEngine, str]:
    """A first, good run makes a champion for the bad runs to leave alone."""
    engine = LocalEngine(settings)
    data = home / "good"
    data.mkdir()
    make_frame(200, seed=0).to_parquet(data / "part-0.parquet", index=False)
    handle = engine.submit(RunRequest(model=model, data_uri=str(data), trigger_event_id="good", trigger="data"))
    assert handle.status == "Succeeded", engine.run(handle.run_id).error
    version = Registry(mlflow_server).alias(model, "champion")
    assert version is not None
    return engine, version


def _empty_file(d: Path) -> None:
    (d / "part-0.parquet").write_bytes(b"")


def _truncated(d: Path) -> None:
    make_frame(200, seed=1).to_parquet(d / "part-0.parquet", index=False)
    raw = (d / "part-0.parquet").read_bytes()
    (d / "part-0.parquet").write_bytes(raw[: len(raw) // 2])


def _no_rows(d: Path) -> None:
    make_frame(200, seed=1).head(0).to_parquet(d / "part-0.parquet", index=False)


def _no_label(d: Path) -> None:
    make_frame(200, seed=1).drop(columns=["label"]).to_parquet(d / "part-0.parquet", index=False)


def _text_feature(d: Path) -> None:
    make_frame(200, seed=1).assign(x1="lots").to_parquet(d / "part-0.parquet", index=False)


def _all_nan(d: Path) -> None:
    make_frame(200, seed=1).assign(x1=np.nan, x2=np.nan).to_parquet(d / "part-0.parquet", index=False)


def _no_files(d: Path) -> None:
    (d / "README.txt").write_text("no data here")


BAD: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "empty file": (_empty_file, ("parses",)),
    "truncated file": (_truncated, ("parses",)),
    "no rows": (_no_rows, ("min_rows",)),
    "no data files": (_no_files, ("no .parquet or .csv",)),
    "wrong schema: missing label": (_no_label, ("column_present", "'label'")),
    "wrong schema: text in a numeric feature": (_text_feature, ("column_type", "x1")),
    "all NaN": (_all_nan, ("nan", "x1")),
}


def _assert_refused(engine: LocalEngine, settings: Settings, model: str, champion: str, uri: str,
                    words: tuple[str, ...]) -> None:
    registry = Registry(settings.tracking_uri)
    versions = len(registry.versions(model))
    handle = engine.submit(RunRequest(model=model, data_uri=uri, trigger_event_id=f"bad-{uuid.uuid4().hex[:6]}",
                                      trigger="data"))
    run = engine.run(handle.run_id)
    assert handle.status == "Failed"
    failed = [s for s in run.steps if s.status in ("Failed", "Error")]
    assert failed and failed[0].name in ("snapshot", "validate"), [(s.name, s.status) for s in run.steps]
    message = failed[0].error or ""
    assert all(w.lower() in message.lower() for w in words), message
    assert run.step("train").status == "Omitted", "nothing trains on bad data"
    assert registry.alias(model, "champion") == champion
    assert len(registry.versions(model)) == versions, "no version registered"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_fails_validation_with_a_clear_message_and_the_champion_is_unchanged(
        case, champion, settings, model, tmp_path):
    engine, version = champion
    write, words = BAD[case]
    data = tmp_path / "data"
    data.mkdir()
    write(data)
    _assert_refused(engine, settings, model, version, str(data), words)


def test_object_keys_that_traverse_out_of_the_prefix_fail_validation(champion, settings, model, s3_bucket,
                                                                       s3_endpoint, tmp_path):
    import boto3

    engine, version = champion
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    make_frame(200, seed=2).to_parquet(tmp_path / "good.parquet", index=False)
    body = (tmp_path / "good.parquet").read_bytes()
    client.put_object(Bucket=s3_bucket, Key="incoming/part-0.parquet", Body=body)
    client.put_object(Bucket=s3_bucket, Key="incoming/../../etc/part-1.parquet", Body=body)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="incoming/")["Contents"]]
    assert "incoming/../../etc/part-1.parquet" in keys, "the S3 server keeps the key as given"
    _assert_refused(engine, settings, model, version, f"s3://{s3_bucket}/incoming/", ("path traversal",))

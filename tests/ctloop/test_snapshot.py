"""Snapshots pin exact objects: same data, same digest; any change, a new digest; reads verify the pin."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pandas as pd
import pytest

from ctloop.snapshot import Snapshot, SnapshotError, load_frame, take_snapshot
from ctloop.trainer.validation import validate
from tests.trainer.conftest import make_frame, make_spec, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


def test_same_data_gives_the_same_digest(dataset: Path) -> None:
    assert take_snapshot(str(dataset)).digest == take_snapshot(dataset.as_uri()).digest


def test_a_copy_of_the_data_elsewhere_gives_the_same_digest(dataset: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(dataset, tmp_path / "elsewhere")
    assert take_snapshot(str(copy)).digest == take_snapshot(str(dataset)).digest


def test_a_changed_file_gives_a_new_digest(dataset: Path) -> None:
    before = take_snapshot(str(dataset))
    make_frame(200, seed=99).to_parquet(dataset / "part-1.parquet", index=False)
    assert take_snapshot(str(dataset)).digest != before.digest


def test_an_added_or_removed_file_gives_a_new_digest(dataset: Path) -> None:
    before = take_snapshot(str(dataset)).digest
    make_frame(10, seed=5).to_csv(dataset / "extra.csv", index=False)
    added = take_snapshot(str(dataset)).digest
    (dataset / "part-0.parquet").unlink()
    removed = take_snapshot(str(dataset)).digest
    assert len({before, added, removed}) == 3


def test_only_data_files_count(dataset: Path) -> None:
    before = take_snapshot(str(dataset))
    (dataset / "README.txt").write_text("not data")
    after = take_snapshot(str(dataset))
    assert after.digest == before.digest
    assert [Path(o.key).name for o in after.objects] == ["part-0.parquet", "part-1.parquet"]


def test_a_single_object_uri_pins_only_that_object(dataset: Path) -> None:
    snapshot = take_snapshot(str(dataset / "part-0.parquet"))
    assert [Path(o.key).name for o in snapshot.objects] == ["part-0.parquet"]
    assert len(load_frame(snapshot)) == 200


def test_a_prefix_does_not_match_sibling_directories(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", files=1)
    write_dataset(tmp_path / "data2", files=1)
    snapshot = take_snapshot(str(tmp_path / "data"))
    assert len(snapshot.objects) == 1


def test_load_frame_reads_every_pinned_row_in_key_order(dataset: Path) -> None:
    frame = load_frame(take_snapshot(str(dataset)))
    assert list(frame["id"]) == list(range(400))


def test_load_frame_fails_when_a_pinned_object_changed(dataset: Path) -> None:
    snapshot = take_snapshot(str(dataset))
    make_frame(200, seed=42).to_parquet(dataset / "part-1.parquet", index=False)
    with pytest.raises(SnapshotError, match=r"part-1\.parquet changed since the snapshot"):
        load_frame(snapshot)


def test_load_frame_fails_when_a_pinned_object_is_gone(dataset: Path) -> None:
    snapshot = take_snapshot(str(dataset))
    (dataset / "part-0.parquet").unlink()
    with pytest.raises(SnapshotError, match=r"part-0\.parquet"):
        load_frame(snapshot)


def test_a_relative_path_is_pinned_as_an_absolute_uri(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dataset.parent)
    snapshot = take_snapshot("data")
    assert snapshot.uri == dataset.as_uri()
    monkeypatch.chdir("/")
    assert len(load_frame(snapshot)) == 400


def test_snapshot_round_trips_through_json(dataset: Path) -> None:
    snapshot = take_snapshot(str(dataset))
    assert Snapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


@pytest.mark.s3
def test_s3_snapshot_and_load(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in sorted(write_dataset(tmp_path / "data", fmt="csv").iterdir()):
        s3.put_object(Bucket=s3_bucket, Key=f"churn/2026/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket=s3_bucket, Key="churn/_SUCCESS", Body=b"")
    uri = f"s3://{s3_bucket}/churn/"

    snapshot = take_snapshot(uri, s3_endpoint_url=s3_endpoint)
    assert [o.key for o in snapshot.objects] == ["churn/2026/part-0.csv", "churn/2026/part-1.csv"]
    assert take_snapshot(uri, s3_endpoint_url=s3_endpoint).digest == snapshot.digest
    frame = load_frame(snapshot, s3_endpoint_url=s3_endpoint)
    pd.testing.assert_frame_equal(frame, load_frame(take_snapshot(str(tmp_path / "data"))))
    assert validate(snapshot, make_spec().data, s3_endpoint_url=s3_endpoint).rows == 400

    s3.put_object(Bucket=s3_bucket, Key="churn/2026/part-1.csv", Body=b"id,x1\n1,2\n")
    assert take_snapshot(uri, s3_endpoint_url=s3_endpoint).digest != snapshot.digest
    with pytest.raises(SnapshotError, match="changed since the snapshot"):
        load_frame(snapshot, s3_endpoint_url=s3_endpoint)

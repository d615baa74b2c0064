"""The split is a pure function of each row's identity: no seed, no file order, no row order."""

from __future__ import annotations

import pandas as pd

from ctloop.modelspec import DataSchema
from ctloop.trainer.split import split_frame
from tests.trainer.conftest import make_frame, make_spec

SPEC = make_spec()


def _ids(frame: pd.DataFrame) -> set[int]:
    return set(frame["id"])


def test_parts_are_disjoint_cover_every_row_and_have_the_requested_shares() -> None:
    frame = make_frame(5000)
    parts = split_frame(frame, SPEC)
    assert len(parts.train) + len(parts.val) + len(parts.holdout) == 5000
    assert not (_ids(parts.train) & _ids(parts.val)) and not (_ids(parts.val) & _ids(parts.holdout))
    assert abs(len(parts.holdout) / 5000 - SPEC.train.holdout_share) < 0.03
    assert abs(len(parts.val) / 5000 - SPEC.train.val_share) < 0.03


def test_shuffled_rows_and_more_data_keep_every_row_in_its_part() -> None:
    frame = make_frame(1000)
    before = split_frame(frame, SPEC)
    grown = pd.concat([make_frame(500, seed=7, offset=1000), frame.sample(frac=1.0, random_state=3)])
    after = split_frame(grown, SPEC)
    assert _ids(before.holdout) == _ids(after.holdout) & set(range(1000))
    assert _ids(before.train) == _ids(after.train) & set(range(1000))


def test_the_seed_does_not_move_rows_between_parts() -> None:
    frame = make_frame(1000)
    assert _ids(split_frame(frame, SPEC).holdout) == _ids(split_frame(frame, make_spec(seed=9)).holdout)


def test_without_a_key_identical_rows_land_in_the_same_part() -> None:
    keyless = SPEC.model_copy(update={"data": DataSchema(**{**SPEC.data.model_dump(), "key": None})})
    frame = make_frame(300).drop(columns=["id"])
    doubled = pd.concat([frame, frame], ignore_index=True)
    parts = split_frame(doubled, keyless)
    for part in (parts.train, parts.val, parts.holdout):
        assert len(part) % 2 == 0 and len(part.drop_duplicates()) == len(part) // 2

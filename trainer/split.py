"""The fixed train / validation / holdout split: a pure function of each row's identity.

Tables: a row's identity is its key column when the schema declares one, else its content (features and
label), so a row stays in the same part when files are renamed, reordered or added, duplicates never
straddle parts, and evaluation can rebuild the holdout from the data alone. File datasets: a file's
identity is its content digest. No seed takes part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctloop.modelspec import ModelSpec
from ctloop.snapshot import Snapshot, SnapshotObject

_HASH_KEY = "ctloop-split-v1."  # 16 bytes, as pandas' hash needs; changing it reshuffles every split


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    holdout: pd.DataFrame


def row_positions(frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """Each row's place in [0, 1), uniform and stable across runs, processes and machines."""
    schema = spec.data
    columns = [schema.key] if schema.key else [*schema.feature_names, schema.label]
    identity = frame[columns[0]].astype(str)
    for column in columns[1:]:
        identity = identity + "\x1f" + frame[column].astype(str)
    hashed = pd.util.hash_pandas_object(identity, index=False, hash_key=_HASH_KEY).to_numpy(dtype=np.uint64)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_frame(frame: pd.DataFrame, spec: ModelSpec) -> Split:
    position = row_positions(frame, spec)
    holdout = position < spec.train.holdout_share
    val = ~holdout & (position < spec.train.holdout_share + spec.train.val_share)
    train = ~holdout & ~val

    def part(mask: np.ndarray) -> pd.DataFrame:
        return frame.loc[mask].reset_index(drop=True)

    return Split(train=part(train), val=part(val), holdout=part(holdout))


@dataclass(frozen=True)
class FileSplit:
    train: tuple[SnapshotObject, ...]
    val: tuple[SnapshotObject, ...]
    holdout: tuple[SnapshotObject, ...]


def file_position(obj: SnapshotObject) -> float:
    """A file's place in [0, 1) from its content digest (etag), so a renamed or moved file keeps its part
    and identical copies never straddle parts."""
    digest = hashlib.sha256(f"{_HASH_KEY}{obj.etag}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def split_files(snapshot: Snapshot, spec: ModelSpec) -> FileSplit:
    holdout_share, val_share = spec.train.holdout_share, spec.train.val_share
    parts: dict[str, list[SnapshotObject]] = {"train": [], "val": [], "holdout": []}
    for obj in sorted(snapshot.objects, key=lambda o: o.key):
        position = file_position(obj)
        part = "holdout" if position < holdout_share else "val" if position < holdout_share + val_share else "train"
        parts[part].append(obj)
    return FileSplit(**{name: tuple(objs) for name, objs in parts.items()})

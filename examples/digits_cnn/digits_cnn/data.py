"""The image files this project trains on, and how a batch of them becomes model input.

Images live one directory per label (`<root>/<digit>/<name>.png`), the layout ctloop's files datasets
use. They are PNG when Pillow is installed, else .npy arrays; `load_images` reads either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PIXELS = [f"p{i}" for i in range(64)]
"""The model's input: one row per image, 64 pixel intensities in [0, 1], row-major."""


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def write_digits(root: Path, *, start: int = 0, count: int = 600) -> list[Path]:
    """Images `start`..`start+count` of scikit-learn's bundled digits as files under `root/<label>/`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    image_cls = _pillow()
    written = []
    for i in range(start, min(start + count, len(digits.images))):
        folder = root / str(int(digits.target[i]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255 / 16)).round().astype(np.uint8)
        if image_cls is not None:
            path = folder / f"{i:04d}.png"
            image_cls.fromarray(pixels, mode="L").save(path, format="PNG")
        else:
            path = folder / f"{i:04d}.npy"
            np.save(path, pixels)
        written.append(path)
    return written


def load_images(paths: Sequence[Path]) -> pd.DataFrame:
    """Image files -> the model's input frame (the spec's `data.inputs`)."""
    rows = []
    for path in paths:
        if Path(path).suffix == ".npy":
            pixels = np.load(path)
        else:
            image_cls = _pillow()
            if image_cls is None:
                raise RuntimeError(f"{path}: reading PNG needs Pillow (pip install pillow)")
            with image_cls.open(path) as image:
                pixels = np.asarray(image.convert("L"))
        rows.append(pixels.astype(np.float64).reshape(-1) / 255.0)
    return pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, 64)), columns=PIXELS)


def image_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """A batch of inputs -> the columns the drift monitor watches (the spec's `monitor.featurize`)."""
    pixels = frame[PIXELS].to_numpy(dtype=np.float64).reshape(-1, 8, 8)
    return pd.DataFrame({
        "ink": pixels.mean(axis=(1, 2)),
        "centre_ink": pixels[:, 2:6, 2:6].mean(axis=(1, 2)),
        "left_ink": pixels[:, :, :4].mean(axis=(1, 2)),
    })

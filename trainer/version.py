"""The trainer's code version: what makes changed trainer code retrain and unchanged code hit the caches.

Light (no torch, mlflow or pandas, and the user's package is hashed, not imported), so the sensor can put it
into a run's idempotency key as the train step puts it into the memo key.
"""

from __future__ import annotations

from ctloop.modelspec import ModelSpec
from ctloop.references import source_version
from ctloop.version import code_version as ctloop_version


def trainer_version(spec: ModelSpec) -> str:
    """What names the trainer's code for the memo key and lineage: the image digest when the spec pins one
    (the code is in the image), else sha256 of the package's source plus its version; the built-in: ctloop's."""
    if spec.image:
        return spec.image.rsplit("@", 1)[1]
    if spec.trainer is None:
        return ctloop_version()
    return source_version(spec.trainer)


def has_own_code(spec: ModelSpec) -> bool:
    """Whether the spec's trainer is code other than the ctloop running it: a user trainer or a pinned image."""
    return spec.trainer is not None or spec.image is not None


def run_code_version(spec: ModelSpec, code_version: str) -> str:
    """The code version in a run's keys: the run's (`code_version`) plus, for a trainer of the spec's own,
    its `trainer_version`."""
    if not has_own_code(spec):
        return code_version
    return f"{code_version}+trainer:{trainer_version(spec)}"

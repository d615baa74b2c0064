"""The code version a sensor puts into a run's idempotency key, per model.

A model whose spec names a trainer of its own (a user package, or a pinned image) is keyed by that code as
well as by ctloop's, as the train step's memo key is: the same data with changed trainer code is a new run,
with unchanged code the same run, refused as already run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ctloop.modelspec import ModelSpec
from ctloop.references import BadReference
from ctloop.trainer.version import has_own_code, run_code_version


@dataclass(frozen=True)
class CodeVersions:
    """`default` (ctloop's code version, or the image in the cluster) for every model but those in `models`,
    which map a model's name to its own code version."""

    default: str
    models: Mapping[str, str] = field(default_factory=dict, hash=False)


class LiveVersions(Mapping[str, str]):
    """Each model's own code version as it is on disk: the trainer's package is hashed, not imported, at most
    once per `max_age_s` per model (hashing costs about 0.3-4 ms for the examples' packages, with the shared
    host's load), so an edit reaches a running sensor within that time and a burst of events pays once.
    A package that is not installed has no entry: its run fails at the train step, which says so."""

    def __init__(self, specs: Iterable[ModelSpec], code_version: str, *, max_age_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._specs = {spec.name: spec for spec in specs if has_own_code(spec)}
        self._code_version = code_version
        self._max_age_s, self._clock = max_age_s, clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    def __getitem__(self, model: str) -> str:
        spec = self._specs[model]
        now = self._clock()
        cached = self._cache.get(model)
        if cached is None or now - cached[0] >= self._max_age_s:
            try:
                version: str | None = run_code_version(spec, self._code_version)
            except (BadReference, OSError):
                version = None
            cached = self._cache[model] = (now, version)
        if cached[1] is None:
            raise KeyError(model)
        return cached[1]

    def get(self, model: str, default: str | None = None) -> str | None:  # type: ignore[override]
        # Most models have no trainer of their own: answered without raising and catching a KeyError per event.
        if model not in self._specs:
            return default
        try:
            return self[model]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def local_versions(specs: Iterable[ModelSpec], code_version: str, *, max_age_s: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> CodeVersions:
    """What the local sensor keys runs by: ctloop's `code_version`, plus each own trainer's, read live."""
    return CodeVersions(code_version, LiveVersions(specs, code_version, max_age_s=max_age_s, clock=clock))


def cluster_versions(specs: Iterable[ModelSpec], image: str) -> CodeVersions:
    """What the rendered sensors key runs by: the runtime `image`, plus the digest of each spec's own pinned
    image. A user trainer without an image runs in the runtime image, so `image` already names its code."""
    return CodeVersions(image, {spec.name: run_code_version(spec, image) for spec in specs if spec.image})

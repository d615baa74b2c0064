"""Where the monitor's reference comes from: the champion's training run in MLflow, or a file."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctloop.failures import REGISTRY_FIX, Refused, Unreachable
from ctloop.mlflow_http import bound_mlflow_http, brief, no_answer
from ctloop.profile import PROFILE_ARTIFACT, ReferenceProfile, load_profile


class ReferenceNotFound(LookupError, Refused):
    """No reference profile where one was expected; the message says where."""


@dataclass(frozen=True)
class Reference:
    profile: ReferenceProfile
    model: str
    version: str | None = None
    run_id: str | None = None


def reference_from_file(path: Path | str, model: str) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise ReferenceNotFound(f"no reference profile file at {path}")
    return Reference(load_profile(path.read_text()), model)


def reference_from_registry(tracking_uri: str, model: str, alias: str = "champion") -> Reference:
    """`models:/<model>@<alias>` → its version's run → that run's `reference_profile.json`."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    bound_mlflow_http()
    client = MlflowClient(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        if no_answer(exc):
            raise Unreachable(f"registry {tracking_uri} unavailable: {brief(exc)}",
                              fix=REGISTRY_FIX) from None
        raise ReferenceNotFound(f"models:/{model}@{alias} does not resolve: {exc.message}") from None
    if not version.run_id:
        raise ReferenceNotFound(f"models:/{model}@{alias} (version {version.version}) has no training run")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(version.run_id, PROFILE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise ReferenceNotFound(
                f"run {version.run_id} of models:/{model}@{alias} has no {PROFILE_ARTIFACT}: {exc}"
            ) from None
        profile = load_profile(Path(local).read_text())
    return Reference(profile, model, str(version.version), version.run_id)

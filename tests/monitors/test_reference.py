"""The champion's reference profile from the MLflow registry; reports logged to the champion's run."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ctloop.monitors.reference import ReferenceNotFound, reference_from_file, reference_from_registry
from ctloop.monitors.report import ReportSink
from ctloop.profile import build_profile


@pytest.fixture
def registry(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("monitor", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, experiment


def _profile():
    rng = np.random.default_rng(0)
    return build_profile(pd.DataFrame({"x": rng.normal(0, 1, 100)}), numeric=["x"], categorical=[])


def test_champion_profile_comes_from_its_training_run_and_reports_go_back_to_it(registry, tmp_path):
    uri, client, experiment = registry
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, _profile().to_json(), "reference_profile.json")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("churn")
    version = client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("churn", "champion", version.version)

    reference = reference_from_registry(uri, "churn")
    assert reference.profile == _profile()
    assert (reference.model, reference.version, reference.run_id) == ("churn", str(version.version), run.info.run_id)

    sink = ReportSink((tmp_path / "store").as_uri(), tracking_uri=uri, run_id=reference.run_id)
    stored = sink.save("<html>r</html>", model="churn", window_end=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert stored == (tmp_path / "store" / "reports" / "churn" / "20260102T030405.000000Z.html").as_uri()
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "drift_reports")]
    assert logged == ["drift_reports/20260102T030405.000000Z.html"]


def test_missing_champion_or_profile_is_named(registry, tmp_path):
    uri, client, experiment = registry
    with pytest.raises(ReferenceNotFound, match="models:/nobody@champion"):
        reference_from_registry(uri, "nobody")
    run = client.create_run(experiment)
    client.create_registered_model("bare")
    version = client.create_model_version("bare", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("bare", "champion", version.version)
    with pytest.raises(ReferenceNotFound, match=r"has no reference_profile\.json"):
        reference_from_registry(uri, "bare")
    with pytest.raises(ReferenceNotFound, match="no reference profile file"):
        reference_from_file(tmp_path / "none.json", "m")

"""examples/tabular_custom in the loop on the real broker: a user's own network and loss on a table, returned
as a PythonModel, goes from a ctloop.data.arrived event to a served champion, retrains on changed data and
not on the same data again."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.deploy.serving import serving
from tests.examples.loop import first_champion, open_loop, predict_over_http, retrains_on_changed_data_only, use_example

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def test_a_users_own_tabular_network_goes_round_the_loop(tmp_path: Path, kafka_bootstrap: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = use_example("tabular_custom", monkeypatch)
    from tabular_custom.data import CATEGORICAL, NUMERIC, make_customers, write_batch

    data = tmp_path / "store" / "customers"
    write_batch(data, "2026-01", 1500, seed=1, first_id=0)
    loop = open_loop(tmp_path / "home", kafka_bootstrap, spec)
    try:
        version = first_champion(loop, data.as_uri())
        assert float(version.tags["ctloop.metric.roc_auc"]) > 0.8  # the policy's metric is produced
        run = MlflowClient(loop.settings.tracking_uri).get_run(version.run_id)
        assert run.data.tags["ctloop.trainer"] == "tabular_custom.train:train"
        assert run.data.params["gamma"] == "2.0" and "train_focal_loss" in run.data.metrics

        fresh = make_customers(200, seed=99, first_id=10_000)
        with serving(loop.settings.tracking_uri, loop.model, poll_s=0.5) as server:
            server.start()
            predictions = predict_over_http(server.url, fresh[NUMERIC + CATEGORICAL].to_dict(orient="records"))
        accuracy = sum(int(p) == t for p, t in zip(predictions, fresh["churned"], strict=True)) / len(fresh)
        assert accuracy > 0.75

        retrains_on_changed_data_only(loop, data.as_uri(), version,
                                      change=lambda: write_batch(data, "2026-02", 800, seed=2, first_id=1500))
    finally:
        loop.close()

"""examples/digits_cnn in the loop on the real broker: a CNN on image files (a files dataset) goes from a
ctloop.data.arrived event to a served champion, retrains on changed data and not on the same data again."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.deploy.serving import serving
from tests.examples.loop import first_champion, open_loop, predict_over_http, retrains_on_changed_data_only, use_example

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def test_a_cnn_on_image_files_goes_round_the_loop(tmp_path: Path, kafka_bootstrap: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = use_example("digits_cnn", monkeypatch)
    from digits_cnn.data import load_images, write_digits

    data = tmp_path / "store" / "digits"
    write_digits(data, start=0, count=500)
    loop = open_loop(tmp_path / "home", kafka_bootstrap, spec)
    try:
        version = first_champion(loop, data.as_uri())
        assert float(version.tags["ctloop.metric.accuracy"]) > 0.8
        run = MlflowClient(loop.settings.tracking_uri).get_run(version.run_id)
        assert run.data.tags["ctloop.trainer"] == "digits_cnn.train:train"
        assert run.data.tags["ctloop.trainer_code_version"].startswith("sha256:")
        assert run.data.metrics["val_accuracy"] > 0.5 and "roc_auc" in run.data.metrics

        unseen = write_digits(tmp_path / "unseen", start=1500, count=40)
        rows = load_images(unseen).to_dict(orient="records")
        with serving(loop.settings.tracking_uri, loop.model, poll_s=0.5) as server:
            server.start()
            predictions = predict_over_http(server.url, rows)
        truth = [int(p.parent.name) for p in unseen]
        assert sum(int(p) == t for p, t in zip(predictions, truth, strict=True)) / len(truth) > 0.75

        retrains_on_changed_data_only(loop, data.as_uri(), version,
                                      change=lambda: write_digits(data, start=500, count=150))
    finally:
        loop.close()

"""examples/digits_cnn in the loop on the real broker: a CNN on image files (a files dataset) goes from a
ctloop.data.arrived event to a served champion, retrains on changed data and not on the same data again."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ctloop.deploy.serving import serving
from tests.examples.loop import open_loop, predict_over_http, use_example

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def test_a_cnn_on_image_files_goes_round_the_loop(tmp_path: Path, kafka_bootstrap: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = use_example("digits_cnn", monkeypatch)
    from digits_cnn.data import load_images, write_digits

    data = tmp_path / "store" / "digits"
    write_digits(data, start=0, count=500)
    loop = open_loop(tmp_path / "home", kafka_bootstrap, spec)
    try:
        first_event, first = loop.arrive(data.as_uri())
        assert first.kind == "triggered", first.reason
        assert loop.engine.status(first.run_id) == "Succeeded", loop.engine.run(first.run_id)
        assert loop.champion() == "1"
        version = loop.registry.version(loop.model, "1")
        assert version.tags["ctloop.event_id"] == first_event
        assert version.tags["ctloop.data_digest"] and version.tags["ctloop.code_version"]
        assert float(version.tags["ctloop.metric.accuracy"]) > 0.8
        assert "+trainer:sha256:" in version.tags["ctloop.code_version"]
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

        _, again = loop.arrive(data.as_uri())
        assert again.kind == "deduped", f"the same images trained again: {again.kind} {again.reason}"
        assert [v.version for v in loop.registry.versions(loop.model)] == ["1"]

        write_digits(data, start=500, count=150)
        second_event, second = loop.arrive(data.as_uri())
        assert second.kind == "triggered", second.reason
        assert loop.engine.status(second.run_id) == "Succeeded", loop.engine.run(second.run_id)
        latest = loop.registry.version(loop.model, "2")
        assert latest.tags["ctloop.event_id"] == second_event
        assert latest.tags["ctloop.data_digest"] != version.tags["ctloop.data_digest"]
        assert latest.decision in ("promote", "reject") and latest.reasons
    finally:
        loop.close()

"""Shadow scoring: a second alias scored on the champion's live requests, logged with the same ids,
never returned, and never able to fail a request."""

from __future__ import annotations

import time

import pytest
import requests

from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.deploy.serving import serving
from ctloop.deploy.shadow import AliasFollower, shadowing
from ctloop.embedded_bus import EmbeddedBus
from tests.deploy.helpers import log_failing_model, register
from tests.deploy.test_serving import ROWS, published_batches

pytestmark = pytest.mark.mlflow_server


def _serve(registry: Registry, name: str, bus: EmbeddedBus, shadow: str | None = "challenger", poll_s: float = 30.0):
    return serving(registry.tracking_uri, name, poll_s=poll_s, bus=bus, predictions_topic="predictions",
                   shadow=shadow)


def _ask(url: str, rows: list[dict] = ROWS) -> dict:
    response = requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_challenger_scores_the_same_rows_under_the_same_ids_and_is_never_returned(
    registry, model_name, champion, other_model_uri, bus
):
    challenger = register(registry, model_name, other_model_uri)
    registry.set_alias(model_name, "challenger", challenger)
    with _serve(registry, model_name, bus) as server:
        server.start()
        answers = [_ask(server.url) for _ in range(3)]
        shadow = server.app.shadow
        metrics_text = ""
        for _ in range(100):  # the shadow scores off the request path: wait for it, and its metrics, to catch up
            metrics_text = requests.get(f"{server.url}/metrics", timeout=10).text
            if shadow.counts["logged"] == 3 and 'shadow_batches_total{outcome="logged"} 3.0' in metrics_text:
                break
            time.sleep(0.05)
    assert [a["predictions"] for a in answers] == [[1.0, 1.0]] * 3, "the champion answers"
    assert all(a["version"] == champion for a in answers)
    batches = published_batches(bus)
    champions = [b for b in batches if b.role == "champion"]
    shadows = [b for b in batches if b.role == "shadow"]
    assert [b.ids for b in champions] == [a["ids"] for a in answers]
    assert sorted(tuple(b.ids) for b in shadows) == sorted(tuple(a["ids"]) for a in answers), "same ids"
    assert {(b.version, tuple(b.predictions)) for b in shadows} == {(challenger, (2.0, 2.0))}
    assert all(b.rows == ROWS for b in shadows)
    assert shadow.counts == {"logged": 3, "failed": 0, "dropped": 0, "idle": 0} and shadow.rows == 6
    assert 'ctloop_serving_shadow_batches_total{outcome="logged"} 3.0' in metrics_text
    assert f'ctloop_serving_shadow_version{{alias="challenger",model="{model_name}"}} {float(challenger)}' \
        in metrics_text


def test_a_failing_shadow_never_fails_a_request(registry, model_name, champion, mlflow_server, bus):
    broken = register(registry, model_name, log_failing_model(mlflow_server))
    registry.set_alias(model_name, "challenger", broken)
    with _serve(registry, model_name, bus) as server:
        server.start()
        answers = [_ask(server.url) for _ in range(4)]
        shadow = server.app.shadow
        for _ in range(100):
            if shadow.counts["failed"] == 4:
                break
            time.sleep(0.05)
        assert shadow.counts["failed"] == 4 and "this model is broken" in shadow.last_error
    assert [a["predictions"] for a in answers] == [[1.0, 1.0]] * 4
    assert {b.role for b in published_batches(bus)} == {"champion"}, "nothing is logged for a failed shadow"


def test_without_the_alias_nothing_is_shadowed_and_when_it_appears_it_is(
    registry, model_name, champion, other_model_uri, bus
):
    with _serve(registry, model_name, bus, shadow="previous", poll_s=0.2) as server:
        server.start()
        _ask(server.url)
        shadow = server.app.shadow
        for _ in range(100):
            if shadow.counts["idle"] == 1:
                break
            time.sleep(0.05)
        assert shadow.counts["idle"] == 1, "no previous version yet: counted idle"
        v2 = register(registry, model_name, other_model_uri)
        promote(registry, model_name, v2, actor="test", reason="newer", manual=True)
        for _ in range(200):  # both followers poll every 0.2 s
            if server.follower.current.version == v2 and shadow.follower.current is not None:
                break
            time.sleep(0.05)
        assert shadow.follower.current.version == champion, "the old champion is now shadowed as previous"
        answer = _ask(server.url)
        for _ in range(100):
            if shadow.counts["logged"] == 1:
                break
            time.sleep(0.05)
    [logged] = [b for b in published_batches(bus) if b.role == "shadow"]
    assert (logged.version, logged.ids, logged.predictions) == (champion, answer["ids"], [1.0, 1.0])
    assert answer["predictions"] == [2.0, 2.0] and answer["version"] == v2


def test_an_alias_that_disappears_is_no_longer_shadowed(registry, model_name, champion, other_model_uri):
    challenger = register(registry, model_name, other_model_uri)
    registry.set_alias(model_name, "challenger", challenger)
    follower = AliasFollower(registry, model_name, "challenger")
    try:
        assert follower.refresh() and follower.current.version == challenger
        registry.delete_alias(model_name, "challenger")
        assert follower.refresh() and follower.current is None
        assert not follower.refresh()
    finally:
        follower.stop()


def test_a_shadow_needs_a_prediction_log_and_another_alias(registry, model_name, champion):
    with pytest.raises(ValueError, match="prediction log"), shadowing(registry, model_name, "challenger", None):
        pass
    with pytest.raises(ValueError, match="must be one of"), shadowing(registry, model_name, "champion", None):
        pass
    with pytest.raises(ValueError, match="the champion answers"):
        AliasFollower(registry, model_name, "champion")


class _Gated:
    """A model whose predict waits for a gate: a shadow slower than the traffic."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()

    def predict(self, frame):
        self.gate.wait(30)
        return [0] * len(frame)


def test_a_shadow_that_cannot_keep_up_drops_and_counts_instead_of_queueing_without_end(bus):
    from types import SimpleNamespace

    from ctloop.deploy.scoring import Features, parse_request
    from ctloop.deploy.serving import LoadedModel, PredictionLog
    from ctloop.deploy.shadow import Shadow

    model = _Gated()
    follower = SimpleNamespace(name="m", alias="challenger", current=LoadedModel("2", model))
    log = PredictionLog(bus, "predictions")
    shadow = Shadow(follower, log, max_pending=1)
    request = parse_request(b'{"rows": [{"x": 1.0}]}', Features(None))
    shadow.submit(request, ["a-0"], "1")
    for _ in range(100):  # the shadow thread takes the first request and waits in predict
        if shadow._queue.empty():
            break
        time.sleep(0.02)
    shadow.submit(request, ["b-0"], "1")  # queued
    shadow.submit(request, ["c-0"], "1")  # no room: dropped
    model.gate.set()
    shadow.close()
    log.close()
    assert shadow.counts == {"logged": 2, "failed": 0, "dropped": 1, "idle": 0}
    assert [b.ids for b in published_batches(bus)] == [["a-0"], ["b-0"]]


def test_a_request_the_shadow_version_itself_answered_is_not_scored_again(bus):
    from types import SimpleNamespace

    from ctloop.deploy.scoring import Features, parse_request
    from ctloop.deploy.serving import LoadedModel, PredictionLog
    from ctloop.deploy.shadow import Shadow

    model = _Gated()
    model.gate.set()
    log = PredictionLog(bus, "predictions")
    shadow = Shadow(SimpleNamespace(name="m", alias="previous", current=LoadedModel("2", model)), log)
    shadow.submit(parse_request(b'{"rows": [{"x": 1.0}]}', Features(None)), ["a-0"], "2")
    shadow.close()
    log.close()
    assert shadow.counts["idle"] == 1 and published_batches(bus) == []

"""Serving the champion over HTTP: predictions, bad requests, following promotions, the prediction log."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.deploy.serving import ChampionFollower, EventWatcher, PredictionLog, PredictionServer
from ctloop.deploy.serving import serving as deploy_serving
from ctloop.embedded_bus import EmbeddedBus
from ctloop.predictions import parse_batch
from tests.deploy.helpers import register

pytestmark = pytest.mark.mlflow_server

ROWS = [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.5}]


class Serving:
    """A follower, prediction log and HTTP server wired as `ctloop serve` wires them."""

    def __init__(self, registry: Registry, name: str, bus, *, poll_s: float = 30.0) -> None:
        self.follower = ChampionFollower(registry, name, poll_s=poll_s)
        self.follower.refresh()
        self.follower.start()
        self.log = PredictionLog(bus, "predictions")
        self.watcher = EventWatcher(bus, "models", self.follower) if isinstance(bus, EmbeddedBus) else None
        if self.watcher:
            self.watcher.start()
        self.server = PredictionServer(self.follower, self.log)
        self.server.start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        if self.watcher:
            self.watcher.stop()
        self.log.close()
        self.follower.stop()


@pytest.fixture
def serving(registry: Registry, model_name: str, champion: str, bus: EmbeddedBus) -> Iterator[Serving]:
    serving = Serving(registry, model_name, bus)
    yield serving
    serving.close()


def published_batches(bus, topic: str = "predictions") -> list:
    """Everything on the topic (call after the log is closed, so nothing more arrives)."""
    consumer = bus.consumer([topic], "test-reader")
    batches: list = []
    try:
        while messages := consumer.poll(0.5):
            batches += [parse_batch(m.value) for m in messages]
        return batches
    finally:
        consumer.close()


def test_predicts_with_the_champion_and_logs_the_batch(serving, model_name, champion, bus):
    response = requests.post(f"{serving.url}/predict", json={"rows": ROWS}, timeout=10)

    assert response.status_code == 200
    answer = response.json()
    ids = answer.pop("ids")
    assert answer == {"predictions": [1.0, 1.0], "model": model_name, "version": champion}
    assert len(ids) == 2 and len(set(ids)) == 2
    health = requests.get(f"{serving.url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["ready"] is True and health.json()["version"] == champion
    serving.log.close()
    [batch] = published_batches(bus)
    assert (batch.model, batch.version, batch.rows, batch.predictions) == (model_name, champion, ROWS, [1.0, 1.0])
    assert batch.ids == ids, "the log carries the ids the client received"


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.0], [3.0, 4.5]]}},
    {"dataframe_split": {"index": [7, 8], "columns": ["y", "x"], "data": [[2.0, 1.0], [4.5, 3.0]]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"instances": {"x": [1.0, 3.0], "y": [2.0, 4.5]}},
    {"inputs": ROWS},
    {"inputs": {"x": [1.0, 3.0], "y": [2.0, 4.5]}, "params": {}},
])
def test_invocations_speaks_every_mlflow_input_format(serving, payload, bus):
    response = requests.post(f"{serving.url}/invocations", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [1.0, 1.0]
    serving.log.close()
    [batch] = published_batches(bus)
    assert sorted(batch.rows, key=lambda r: r["x"]) == ROWS
    assert batch.columnar, "every format's rows share their features: logged as columns and lists"


def test_ping_version_and_metrics(serving, model_name, champion):
    assert requests.get(f"{serving.url}/ping", timeout=10).status_code == 200
    version = requests.get(f"{serving.url}/version", timeout=10)
    assert version.status_code == 200 and version.json()["version"] == champion
    requests.post(f"{serving.url}/invocations", json={"inputs": ROWS}, timeout=10)
    requests.post(f"{serving.url}/invocations", data=b"{", timeout=10)
    metrics = requests.get(f"{serving.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'ctloop_serving_requests_total{path="/invocations",status="200"} 1.0' in text
    assert 'ctloop_serving_requests_total{path="/invocations",status="400"} 1.0' in text
    assert 'ctloop_serving_errors_total{kind="BAD_REQUEST"} 1.0' in text
    assert f'ctloop_serving_model_version{{model="{model_name}"}} {float(champion)}' in text
    assert 'ctloop_serving_request_seconds_count{path="/invocations"} 2.0' in text
    assert "ctloop_serving_rows_total 2.0" in text


def test_json_integers_are_accepted_for_double_features(serving):
    response = requests.post(f"{serving.url}/predict", json={"rows": [{"x": 1, "y": 2}]}, timeout=10)
    assert response.status_code == 200 and response.json()["predictions"] == [1.0]


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "body is not JSON"),
    (b"[1, 2]", 400, "body must be a JSON object, got list"),
    (b'{"params": {}}', 400, "exactly one input field"),
    (b'{"inputs": [], "instances": []}', 400, "got ['instances', 'inputs']"),
    (b'{"rows": []}', 400, "'rows' must be a non-empty list"),
    (b'{"rows": [1]}', 400, "row 0 must be an object, got int"),
    (b'{"rows": [{"x": 1.0, "y": 2.0}, {"x": 1.0}]}', 400, "row 1 is missing features ['y']"),
    (b'{"rows": [{"x": 1.0, "y": 2.0, "z": 3}]}', 400, "row 0 has unknown features ['z']"),
    (b'{"rows": [{"x": {"a": 1}, "y": 2.0}]}', 400, "row 0 feature 'x' must be a finite scalar"),
    (b'{"rows": [{"x": NaN, "y": 2.0}]}', 400, "row 0 feature 'x' must be a finite scalar"),
    (b'{"rows": [{"x": "abc", "y": 2.0}]}', 400, "does not match the model's signature"),
    (b'{"rows": [{"x": 1.0, "y": 2.0}], "limit": 3}', 400, "unknown fields ['limit']"),
    (b'{"rows": [{"x": 1.0, "y": 2.0}], "params": [1]}', 400, "'params' must be an object"),
    (b'{"dataframe_split": {"columns": ["x", "y"], "data": [[1.0]]}}', 400, "row 0 must be a list of 2 values"),
    (b'{"dataframe_split": {"data": [[1.0, 2.0]]}}', 400, "'dataframe_split.columns' must be a list"),
    (b'{"inputs": {"x": [1.0, 2.0], "y": [1.0]}}', 400, "all of the same length"),
])
def test_invalid_requests_get_a_4xx_naming_the_problem(serving, body, status, message, bus):
    for path in ("/invocations", "/predict"):
        response = requests.post(f"{serving.url}{path}", data=body, timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == status
        assert message in response.json()["error"]
    serving.log.close()
    assert published_batches(bus) == [], "nothing refused reaches the predictions topic"


def test_wrong_paths_methods_and_media_types_are_named(serving):
    wrong_method = requests.get(f"{serving.url}/invocations", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    missing = requests.post(f"{serving.url}/score", json={"rows": ROWS}, timeout=10)
    assert missing.status_code == 404 and "/score" in missing.json()["error"]
    csv = requests.post(f"{serving.url}/invocations", data=b"x,y\n1,2\n", headers={"Content-Type": "text/csv"},
                        timeout=10)
    assert csv.status_code == 415 and "application/json" in csv.json()["error"]


def test_too_many_rows_is_413(serving):
    serving.server.app.max_rows = 1
    response = requests.post(f"{serving.url}/predict", json={"rows": ROWS}, timeout=10)
    assert response.status_code == 413 and "2 rows exceed the limit of 1" in response.json()["error"]


def test_a_body_over_the_limit_is_413_before_it_is_read(serving):
    serving.server.app.max_body_bytes = 1000
    response = requests.post(f"{serving.url}/invocations", data=b" " * 5000, timeout=10)
    assert response.status_code == 413 and "exceeds the limit of 1000" in response.json()["error"]
    chunked = requests.post(f"{serving.url}/invocations", data=iter([b" " * 600, b" " * 600]), timeout=10)
    assert chunked.status_code == 413 and chunked.json()["error_code"] == "BODY_TOO_LARGE"


def test_without_a_champion_health_and_predict_answer_503(registry, model_name, constant_model_uri, bus):
    register(registry, model_name, constant_model_uri)
    serving = Serving(registry, model_name, bus)
    try:
        assert requests.get(f"{serving.url}/health", timeout=10).status_code == 503
        assert requests.get(f"{serving.url}/ping", timeout=10).status_code == 503
        response = requests.post(f"{serving.url}/invocations", json={"inputs": ROWS}, timeout=10)
        assert response.status_code == 503 and "no champion" in response.json()["error"]
    finally:
        serving.close()


def test_a_promotion_switches_serving_with_no_failed_request(
    serving, registry, model_name, champion, other_model_uri, bus, tmp_path
):
    v2 = register(registry, model_name, other_model_uri)
    outcomes: list[tuple[int, str | None, list]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(f"{serving.url}/predict", json={"rows": ROWS}, timeout=30)
                body = response.json()
                outcomes.append((response.status_code, body.get("version"), body.get("predictions")))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        while len(outcomes) < 5:
            stop.wait(0.05)
        # The follower polls only every 30 s here: the promoted event is what wakes it. The promoter
        # has its own connection to the bus, as another process would.
        promoter_bus = EmbeddedBus(bus.path)
        promote(registry, model_name, v2, actor="test", reason="switch", manual=True, bus=promoter_bus,
                models_topic="models")
        promoter_bus.close()
        while not any(version == v2 for _, version, _ in outcomes[-3:]) and thread.is_alive():
            stop.wait(0.05)
        served_new = len(outcomes)
        while len(outcomes) < served_new + 5:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)

    assert all(status == 200 for status, _, _ in outcomes)
    versions = [version for _, version, _ in outcomes]
    switch = versions.index(v2)
    assert set(versions[:switch]) == {champion} and set(versions[switch:]) == {v2}
    assert all(preds == ([1.0, 1.0] if version == champion else [2.0, 2.0]) for _, version, preds in outcomes)
    serving.log.close()
    assert serving.log.dropped == 0
    assert [b.version for b in published_batches(bus)] == versions


def test_follower_notices_an_alias_change_by_polling(registry, model_name, champion, other_model_uri, tmp_path):
    follower = ChampionFollower(registry, model_name, poll_s=0.2)
    follower.refresh()
    v2 = register(registry, model_name, other_model_uri)
    follower.start()
    try:
        promote(registry, model_name, v2, actor="test", reason="poll", manual=True)
        for _ in range(200):
            if follower.current.version == v2:
                break
            threading.Event().wait(0.05)
        assert follower.current.version == v2
    finally:
        follower.stop()


@pytest.mark.kafka
def test_prediction_batches_reach_the_real_broker(registry, model_name, champion, kafka_bus, unique_topic):
    follower = ChampionFollower(registry, model_name)
    follower.refresh()
    log = PredictionLog(kafka_bus, unique_topic)
    server = PredictionServer(follower, log)
    server.start()
    try:
        assert requests.post(f"{server.url}/predict", json={"rows": ROWS}, timeout=10).status_code == 200
    finally:
        server.stop()
        log.close()
        follower.stop()
    consumer = kafka_bus.consumer([unique_topic], "test-reader")
    try:
        batches = []
        for _ in range(20):
            batches += [parse_batch(m.value) for m in consumer.poll(1.0)]
            if batches:
                break
    finally:
        consumer.close()
    assert [(b.model, b.version, b.rows) for b in batches] == [(model_name, champion, ROWS)]


def docs_rows_of():
    """The `rows_of` reader that docs/concepts/serving.md gives users, run as they would copy it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "concepts" / "serving.md").read_text()
    [block] = [b.split("\n", 1)[1] for b in page.split("```python")[1:] if "def rows_of" in b]
    scope: dict = {}
    exec(block.split("```")[0], scope)
    return scope["rows_of"]


@pytest.mark.kafka
def test_an_outsider_reads_the_predictions_topic_with_a_plain_consumer(
    registry, model_name, champion, kafka_bus, kafka_bootstrap, unique_topic,
):
    """No ctloop on the reader's side: a confluent-kafka consumer, `json` and the documented `rows_of`."""
    from confluent_kafka import Consumer

    follower = ChampionFollower(registry, model_name)
    follower.refresh()
    log = PredictionLog(kafka_bus, unique_topic)
    server = PredictionServer(follower, log)
    server.start()
    split = {"columns": ["y", "x"], "data": [[r["y"], r["x"]] for r in ROWS]}
    try:
        for payload in ({"dataframe_split": split}, {"dataframe_records": ROWS}):
            assert requests.post(f"{server.url}/invocations", json=payload, timeout=10).status_code == 200
    finally:
        server.stop()
        log.close()
        follower.stop()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "outsider", "auto.offset.reset": "earliest"})
    consumer.subscribe([unique_topic])
    try:
        docs = []
        deadline = time.monotonic() + 30
        while len(docs) < 2 and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                docs.append(json.loads(message.value()))
    finally:
        consumer.close()
    rows_of = docs_rows_of()
    assert [(d["columns"], d["data"]) for d in docs] == [(split["columns"], split["data"]), (["x", "y"], [[1.0, 2.0],
                                                                                                         [3.0, 4.5]])]
    assert [rows_of(d) for d in docs] == [ROWS, ROWS] and all(d["predictions"] == [1.0, 1.0] for d in docs)
    assert rows_of({"rows": ROWS, "predictions": [0, 0]}) == ROWS, "the rows form of older messages"


def test_serving_wires_follower_log_and_watcher_and_closes_them_on_exit(
    registry, model_name, champion, other_model_uri, bus, tmp_path
):
    with deploy_serving(registry.tracking_uri, model_name, poll_s=30.0, bus=bus, predictions_topic="predictions",
                        models_topic="models") as server:
        server.start()
        answer = requests.post(f"{server.url}/predict", json={"rows": ROWS}, timeout=30).json()
        assert answer["version"] == champion
        v2 = register(registry, model_name, other_model_uri)
        # The promoted event wakes the follower long before its 30 s alias poll would.
        promote(registry, model_name, v2, actor="test", reason="better", manual=True, bus=bus, models_topic="models")
        for _ in range(500):
            if server.follower.current.version == v2:
                break
            time.sleep(0.05)
        assert server.follower.current.version == v2
        server.stop()
    assert [b.version for b in published_batches(bus)] == [champion]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=5)


def test_serving_announces_a_promotion_left_in_the_outbox_when_it_starts(
    registry, model_name, champion, other_model_uri, bus, tmp_path
):
    """A promoter that committed a move but could not publish it leaves the event in the registry's
    outbox; the next serving replica to start publishes it, with the event id the move recorded."""
    from ctloop.deploy import outbox
    from ctloop.events import parse

    class Unreachable(EmbeddedBus):
        def publish(self, *args, **kwargs):
            raise OSError("broker unreachable")

    down = Unreachable(tmp_path / "down.db")
    try:
        v2 = register(registry, model_name, other_model_uri)
        moved = promote(registry, model_name, v2, actor="test", reason="better", manual=True, bus=down,
                        models_topic="models")
    finally:
        down.close()
    assert moved.changed and not moved.published
    [left] = outbox.pending(registry, model_name)

    with deploy_serving(registry.tracking_uri, model_name, poll_s=30.0, bus=bus, predictions_topic="predictions",
                        models_topic="models") as server:
        assert server.follower.current.version == v2
        consumer = bus.consumer(["models"], "announcement-reader")
        announced = []
        for _ in range(60):
            announced += [parse(m.value) for m in consumer.poll(timeout_s=0.5)]
            if announced:
                break
        consumer.close()
    assert [(e.id, e.data.version, e.data.previous_version) for e in announced] == [
        (parse(left.event.encode()).id, v2, champion)]
    assert outbox.pending(registry, model_name) == []

"""Safer promotion end to end on the real Kafka broker and a real `mlflow server`: serving answers with the new
champion and shadows the previous one; labels arrive late and out of order and are joined; the bake window rolls
a deliberately worse champion back through the audited path (with the evidence, an event and an alert) and keeps
a good one, closing its bake in the audit trail."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from ctloop.deploy.bake import RegistryBakes
from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.deploy.serving import PredictionServer, serving
from ctloop.events import LabelObserved, ModelRolledBack, new_event, parse, to_bytes
from ctloop.kafka_bus import KafkaBus
from ctloop.modelspec import BakeRule, DataSchema, Feature, ModelSpec, PromotionPolicy
from ctloop.monitors.alerts import WebhookNotifier
from ctloop.monitors.bake import BakeVerdict, bake_once
from ctloop.monitors.joiner import Joiner
from ctloop.monitors.outcomes import OutcomeStore
from ctloop.settings import Settings, Topics
from tests.monitors.conftest import webhook  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.mlflow_server]

REQUESTS, ROWS_PER_REQUEST = 8, 10
RULE = BakeRule(window="2m", min_rows=60, tolerance=0.05)


def _log(tracking_uri: str, kind: str) -> str:
    """A real pyfunc model on feature x: "sign" predicts the label (x > 0) right; "zeros" always predicts 0."""
    import mlflow
    import pandas as pd

    class Rule(mlflow.pyfunc.PythonModel):
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def predict(self, context, model_input, params=None):
            return [int(x > 0) if self.kind == "sign" else 0 for x in model_input["x"]]

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("ctloop-e2e-bake")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Rule(kind), pip_requirements=[],
                                       input_example=pd.DataFrame({"x": [0.5]}))
    return info.model_uri


@pytest.fixture(scope="module")
def uris(mlflow_server: str) -> dict[str, str]:
    return {kind: _log(mlflow_server, kind) for kind in ("sign", "zeros")}


@dataclass(frozen=True)
class Baked:
    name: str
    previous: str
    champion: str
    xs: dict[str, float]
    verdicts: list[BakeVerdict]
    registry: Registry
    opened_at: datetime
    models_topic: str


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _ask(server: PredictionServer, rng: random.Random) -> dict[str, float]:
    xs = [rng.uniform(-1, 1) for _ in range(ROWS_PER_REQUEST)]
    answer = requests.post(f"{server.url}/invocations", json={"inputs": {"x": xs}}, timeout=30).json()
    return dict(zip(answer["ids"], xs, strict=True))


def _publish_labels_late_and_shuffled(bus: KafkaBus, topic: str, xs: dict[str, float], rng: random.Random) -> None:
    """Every label observed minutes after serving, published in random order."""
    ids = list(xs)
    rng.shuffle(ids)
    for i, pid in enumerate(ids):
        observed = datetime.now(UTC) + timedelta(minutes=1, seconds=i)
        event = new_event(LabelObserved(prediction_id=pid, label=int(xs[pid] > 0), observed_at=observed))
        bus.publish(topic, to_bytes(event), key=pid)
    bus.flush()


def _play(tmp_path: Path, bus: KafkaBus, tracking_uri: str, first: str, second: str, webhook_url: str,
          *, judge_at: Callable[[datetime], datetime | None]) -> Baked:
    """`first` is champion, `second` is promoted over it; serve and shadow, label, join, judge the bake."""
    name = f"bake-{uuid.uuid4().hex[:8]}"
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    topics = Topics(predictions=f"{prefix}.predictions", models=f"{prefix}.models", labels=f"{prefix}.labels",
                    deadletter=f"{prefix}.dead")
    settings = Settings(home=tmp_path / name, topics=topics)
    spec = ModelSpec(name=name, data=DataSchema(features=(Feature(name="x"),), label="y"),
                     policy=PromotionPolicy(bake=RULE))
    registry = Registry(tracking_uri)
    previous = registry.create_version(name, first, run_id=None, tags={}).version
    promote(registry, name, previous, actor="e2e", reason="first", manual=True, bus=bus, models_topic=topics.models)
    champion = registry.create_version(name, second, run_id=None, tags={}).version
    rng = random.Random(7)
    xs: dict[str, float] = {}
    store = OutcomeStore(f"sqlite:///{tmp_path / name}-outcomes.db")
    joiner = Joiner(bus, settings, store, key_column=lambda model: None, horizon_s=3600,
                    group=f"{prefix}-joiner")
    bakes = RegistryBakes(registry, bus=bus, models_topic=topics.models)
    verdicts: list[BakeVerdict] = []
    try:
        with serving(tracking_uri, name, poll_s=0.5, bus=bus, predictions_topic=topics.predictions,
                     models_topic=topics.models, shadow="previous") as server:
            server.start()
            promote(registry, name, champion, actor="e2e", reason="promoted for its bake", manual=True, bus=bus,
                    models_topic=topics.models)
            shadow = server.app.shadow
            _wait(lambda: server.follower.current.version == champion
                  and getattr(shadow.follower.current, "version", None) == previous, 60,
                  "serving answers with the new champion and shadows the previous one")
            for _ in range(REQUESTS):
                xs |= _ask(server, rng)
            _wait(lambda: shadow.counts["logged"] == REQUESTS, 60, "the shadow scored every request")
            # Half the labels, some joined before their predictions reach the joiner; then the rest.
            ids = list(xs)
            _publish_labels_late_and_shuffled(bus, topics.labels, {k: xs[k] for k in ids[::2]}, rng)
            joiner.step(timeout_s=1.0)
            _publish_labels_late_and_shuffled(bus, topics.labels, {k: xs[k] for k in ids[1::2]}, rng)
            rows = 2 * len(xs)  # the champion's row and the shadow's of each prediction

            def joined_all() -> bool:
                joiner.step(timeout_s=0.5)
                return store.counts(name).joined == rows

            _wait(joined_all, 90, f"all {rows} served rows joined to their labels")
            opened = bakes.baking(name)
            assert opened is not None and (opened.version, opened.previous) == (champion, previous)
            notifier = WebhookNotifier(webhook_url)
            verdicts.append(bake_once(spec, store, bakes, notifier=notifier))
            later = judge_at(opened.opened_at)
            if later is not None:
                verdicts.append(bake_once(spec, store, bakes, notifier=notifier, now=later))
            if verdicts[-1].outcome == "rollback":
                _wait(lambda: server.follower.current.version == previous, 30,
                      "serving follows the rollback back to the previous champion")
    finally:
        joiner.close()
        store.close()
    return Baked(name, previous, champion, xs, verdicts, registry, opened.opened_at, topics.models)


def _models_events(bus: KafkaBus, topic: str) -> list:
    consumer = bus.consumer([topic], group=f"e2e-reader-{uuid.uuid4().hex[:8]}")
    try:
        events, empty = [], 0
        while empty < 3:
            batch = consumer.poll(timeout_s=1.0)
            empty = 0 if batch else empty + 1
            events += [parse(m.value) for m in batch]
        return events
    finally:
        consumer.close()


def test_a_degraded_champion_is_rolled_back_within_its_bake_window(
    tmp_path, kafka_bus, mlflow_server, uris, webhook,  # noqa: F811
):
    baked = _play(tmp_path, kafka_bus, mlflow_server, uris["sign"], uris["zeros"], webhook.url,
                  judge_at=lambda opened: None)

    [verdict] = baked.verdicts
    assert verdict.outcome == "rollback"
    # The figures are the direct computation on the same served rows: v2 says 0 everywhere, v1 is always right.
    negatives = sum(1 for x in baked.xs.values() if x <= 0) / len(baked.xs)
    e = verdict.evidence
    assert (e["rows"], e["champion_value"], e["previous_value"]) == (len(baked.xs), pytest.approx(negatives), 1.0)
    assert baked.registry.aliases(baked.name) == {"champion": baked.previous}
    last = baked.registry.model(baked.name).audit[-1]
    assert (last["action"], last["actor"], last["manual"], last["from_version"], last["version"]) == (
        "rollback", "ctloop-bake", False, baked.champion, baked.previous)
    assert last["evidence"]["rows"] == len(baked.xs) and last["evidence"]["window_end"] == e["window_end"]
    rolled_at = datetime.fromisoformat(last["ts"])
    assert rolled_at < baked.opened_at + timedelta(seconds=RULE.window_s), "within the bake window"
    [rolled] = [ev.data for ev in _models_events(kafka_bus, baked.models_topic) if isinstance(ev.data, ModelRolledBack)]
    assert (rolled.from_version, rolled.to_version, rolled.actor) == (baked.champion, baked.previous, "ctloop-bake")
    assert [a["text"] for a in webhook] == [
        f"Rolled back model {baked.name}: version {baked.champion} -> {baked.previous} after its bake"]


def test_a_good_champion_is_kept_and_its_bake_closed(tmp_path, kafka_bus, mlflow_server, uris, webhook):  # noqa: F811
    baked = _play(tmp_path, kafka_bus, mlflow_server, uris["zeros"], uris["sign"], webhook.url,
                  judge_at=lambda opened: opened + timedelta(seconds=RULE.window_s))

    during, after = baked.verdicts
    assert during.outcome == "pending", "no worse: watched until the window ends"
    assert after.outcome == "kept"
    assert (after.evidence["champion_value"], after.evidence["rows"]) == (1.0, len(baked.xs))
    assert baked.registry.aliases(baked.name) == {"champion": baked.champion, "previous": baked.previous}
    last = baked.registry.model(baked.name).audit[-1]
    assert (last["action"], last["outcome"], last["version"]) == ("bake", "kept", baked.champion)
    assert webhook == [], "no alert for a kept champion"

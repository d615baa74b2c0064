"""`ctloop bake`: a champion worse than the previous one on the same live labels is rolled back, with the
evidence in the audit trail and an alert; a good one is kept and its bake closed. Real `mlflow server`,
real outcome store; the rows stand for what serving and the joiner wrote."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.deploy.bake import RegistryBakes
from ctloop.deploy.promotion import promote
from ctloop.deploy.registry import Registry
from ctloop.modelspec import DataSchema, Feature, ModelSpec, PromotionPolicy, save_spec
from ctloop.monitors.bake import bake_once
from ctloop.monitors.outcomes import Label, OutcomeStore, ServedBatch, default_url
from ctloop.predictions import PredictionBatch
from ctloop.settings import Settings
from tests.deploy.helpers import log_constant_model
from tests.monitors.conftest import webhook  # noqa: F401  (a fixture)

pytestmark = pytest.mark.mlflow_server


@pytest.fixture(scope="module")
def model_uri(mlflow_server: str) -> str:
    return log_constant_model(mlflow_server, 1.0)


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, data=DataSchema(features=(Feature(name="x"),), label="y"),
                     policy=PromotionPolicy(bake={"window": "10m", "min_rows": 20, "tolerance": 0.05}))


def _promoted_twice(registry: Registry, name: str, uri: str) -> tuple[str, str]:
    versions = [registry.create_version(name, uri, run_id=None, tags={}).version for _ in range(2)]
    for version in versions:
        promote(registry, name, version, actor="test", reason="by hand", manual=True)
    return versions[0], versions[1]


def _served(store: OutcomeStore, name: str, champion: tuple[str, int], previous: tuple[str, int], n: int = 30):
    """`n` requests answered by the champion and shadowed by the previous version, all labelled 1: the first
    `right` predictions of each version are right."""
    now = datetime.now(UTC)
    served, labels = [], []
    for i in range(n):
        pid = f"{uuid.uuid4().hex}-0"
        for role, (version, right) in (("champion", champion), ("shadow", previous)):
            batch = PredictionBatch(model=name, version=version, role=role, rows=[{"x": float(i)}],
                                    predictions=[1 if i < right else 0], ids=[pid], ts=now)
            served.append(ServedBatch.of(batch))
        labels.append(Label(uuid.uuid4().hex, 1, now + timedelta(seconds=1), prediction_id=pid))
    store.add(served, labels, horizon_s=3600)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> Settings:
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTLOOP_MLFLOW_TRACKING_URI", mlflow_server)
    return Settings()


def test_a_worse_champion_is_rolled_back_with_the_evidence_and_an_alert(home, model_uri, webhook):  # noqa: F811
    name = f"bake-{uuid.uuid4().hex[:8]}"
    save_spec(_spec(name), home)
    registry = Registry(home.tracking_uri)
    v1, v2 = _promoted_twice(registry, name, model_uri)
    store = OutcomeStore(default_url(home.home))
    _served(store, name, champion=(v2, 15), previous=(v1, 28))
    store.close()
    shown = json.loads(CliRunner().invoke(app, ["models", "show", name, "--json"]).output)
    assert (shown["bake"]["version"], shown["bake"]["previous"]) == (v2, v1)
    assert "on probation against" in CliRunner().invoke(app, ["models", "show", name]).output

    result = CliRunner().invoke(app, ["bake", "--once", "--model", name, "--webhook", webhook.url])

    assert result.exit_code == 0, result.output
    assert f"{name} v{v2}: rollback: bake: accuracy 0.5000 for version {v2} against 0.9333" in result.output
    assert registry.aliases(name) == {"champion": v1}
    last = registry.model(name).audit[-1]
    assert (last["action"], last["actor"], last["manual"], last["version"], last["from_version"]) == (
        "rollback", "ctloop-bake", False, v1, v2)
    evidence = last["evidence"]
    assert (evidence["rows"], evidence["champion_value"], evidence["previous_value"]) == (
        30, 0.5, pytest.approx(28 / 30))
    assert evidence["window_end"] == (datetime.fromisoformat(evidence["window_start"])
                                      + timedelta(minutes=10)).isoformat()
    assert [a["text"] for a in webhook] == [f"Rolled back model {name}: version {v2} -> {v1} after its bake"]

    again = CliRunner().invoke(app, ["bake", "--once", "--model", name])
    assert again.exit_code == 0 and again.output == "", "the bake ended with the rollback"
    assert "bake" not in json.loads(CliRunner().invoke(app, ["models", "show", name, "--json"]).output)


def test_a_good_champion_is_kept_and_its_bake_closed_when_the_window_ends(home, model_uri):
    name = f"bake-{uuid.uuid4().hex[:8]}"
    spec = _spec(name)
    registry = Registry(home.tracking_uri)
    v1, v2 = _promoted_twice(registry, name, model_uri)
    store = OutcomeStore(default_url(home.home))
    _served(store, name, champion=(v2, 29), previous=(v1, 27))
    bakes = RegistryBakes(registry)
    opened = bakes.baking(name)
    assert (opened.version, opened.previous) == (v2, v1)

    during = bake_once(spec, store, bakes, now=opened.opened_at + timedelta(minutes=5))
    assert during.outcome == "pending" and bakes.baking(name) == opened
    after = bake_once(spec, store, bakes, now=opened.opened_at + timedelta(minutes=10))
    store.close()

    assert after.outcome == "kept"
    assert registry.aliases(name) == {"champion": v2, "previous": v1}
    last = registry.model(name).audit[-1]
    assert (last["action"], last["outcome"], last["version"], last["bake"]) == ("bake", "kept", v2, opened.promotion)
    assert last["evidence"]["champion_value"] == pytest.approx(29 / 30)
    assert bakes.baking(name) is None, "closed"


def test_without_a_spec_that_bakes_there_is_nothing_to_judge(home):
    result = CliRunner().invoke(app, ["bake", "--once"])
    assert result.exit_code == 2 and "sets policy.bake" in result.output


def test_a_rollback_alert_that_could_not_be_sent_goes_out_on_a_later_round_once(home, model_uri, webhook):  # noqa: F811
    from tests.fixtures.mlflow_server import free_port

    name = f"bake-{uuid.uuid4().hex[:8]}"
    save_spec(_spec(name), home)
    registry = Registry(home.tracking_uri)
    v1, v2 = _promoted_twice(registry, name, model_uri)
    store = OutcomeStore(default_url(home.home))
    _served(store, name, champion=(v2, 10), previous=(v1, 30))
    store.close()

    down = f"http://127.0.0.1:{free_port()}/hook"
    first = CliRunner().invoke(app, ["bake", "--once", "--model", name, "--webhook", down])
    assert first.exit_code == 0 and ": rollback: " in first.output
    assert registry.aliases(name) == {"champion": v1}, "rolled back though the alert failed"
    assert webhook == []

    for _ in range(2):
        later = CliRunner().invoke(app, ["bake", "--once", "--model", name, "--webhook", webhook.url])
        assert later.exit_code == 0 and later.output == "", "no bake is open any more"
    assert [a["text"] for a in webhook] == [f"Rolled back model {name}: version {v2} -> {v1} after its bake"]


def test_a_registry_that_does_not_answer_is_one_line_naming_it(tmp_path, monkeypatch):
    from tests.fixtures.mlflow_server import free_port

    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CTLOOP_MLFLOW_TRACKING_URI", down)
    save_spec(_spec("churn"), Settings())
    result = CliRunner().invoke(app, ["bake", "--once"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"registry {down} unavailable" in lines[0]

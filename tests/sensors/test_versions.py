"""The code version in a run's key: ctloop's, and for a model with a trainer of its own, that trainer's code as
it is on disk when the key is made, read without importing it."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

from ctloop.modelspec import ModelSpec
from ctloop.sensors.catalog import local_sensors
from ctloop.sensors.local.route import Route
from ctloop.sensors.mapping import parameters
from ctloop.sensors.versions import cluster_versions, local_versions
from ctloop.settings import Settings
from ctloop.workflows.engine import idempotency_key

BASE = "git:0123456789ab"
PINNED = "ghcr.io/team/m@sha256:" + "cd" * 32


def _spec(name: str, trainer: str | None = None, image: str | None = None) -> ModelSpec:
    return ModelSpec.model_validate({"name": name, "data": {"features": [{"name": "x"}], "label": "y"},
                                     "trainer": trainer, "image": image})


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user package on the path, never imported; its trainer would import a module that does not exist."""
    name = f"team_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "src" / name
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "train.py").write_text("import not_installed_anywhere\n\ndef train(ctx):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    return root


def test_a_user_trainer_is_keyed_by_its_source_and_an_edit_is_seen_within_max_age(package: Path) -> None:
    now = [0.0]
    versions = local_versions([_spec("own", f"{package.name}.train:train"), _spec("builtin")], BASE,
                              max_age_s=1.0, clock=lambda: now[0])
    first = versions.models["own"]
    assert first.startswith(f"{BASE}+trainer:sha256:")
    assert versions.models.get("builtin") is None and versions.default == BASE
    now[0] = 5.0
    assert versions.models["own"] == first, "unchanged code, the same version"
    (package / "train.py").write_text((package / "train.py").read_text() + "# tuned\n")
    now[0] = 5.5
    assert versions.models["own"] == first, "hashed at most once per max_age_s"
    now[0] = 6.0
    assert versions.models["own"] != first, "an edit is a new version without restarting anything"
    assert package.name not in sys.modules, "the trainer was imported: the sensor would pay for torch"


def test_a_pinned_image_is_keyed_by_its_digest_locally_and_in_the_cluster() -> None:
    specs = [_spec("imaged", image=PINNED), _spec("own", "team_not_on_path.train:train")]
    assert local_versions(specs, BASE).models["imaged"] == f"{BASE}+trainer:sha256:{'cd' * 32}"
    cluster = cluster_versions(specs, "ghcr.io/ctloop/ctloop:1.0")
    # In the cluster a trainer without an image runs in the runtime image, which the default already names.
    assert dict(cluster.models) == {"imaged": f"ghcr.io/ctloop/ctloop:1.0+trainer:sha256:{'cd' * 32}"}


def test_a_trainer_whose_package_is_not_installed_is_keyed_by_ctloops_version_alone() -> None:
    versions = local_versions([_spec("own", "team_not_on_path.train:train")], BASE)
    assert versions.models.get("own") is None


def test_the_local_sensors_keys_name_each_models_trainer_code(tmp_path: Path, package: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    (settings.home / "specs").mkdir(parents=True)
    (settings.home / "specs" / "own.json").write_text(_spec("own", f"{package.name}.train:train").model_dump_json())
    data_sensor = next(s for s in local_sensors(settings, BASE) if s.name == "ctloop-data-arrived")

    route = Route.of(data_sensor)
    assert route.decide is not None

    def key(model: str) -> str:
        event = {"body": {"id": "e1", "type": "ctloop.data.arrived", "data": {"model": model, "uri": "u",
                                                                              "digest": "d1"}}}
        made = parameters(data_sensor, event, {"id": "e1"})["idempotency-key"]
        # The sensor's body route makes the same key, with the same live version.
        assert route.decide(event["body"], 0.0, False, False).key == made
        return made

    assert key("other") == idempotency_key("other", "d1", BASE)
    before = key("own")
    assert before != idempotency_key("own", "d1", BASE) and key("own") == before
    (package / "train.py").write_text("def train(ctx):\n    return 1\n")
    time.sleep(1.05)  # the sensor hashes a package at most once a second
    assert key("own") != before


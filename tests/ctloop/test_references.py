"""A user's package as a long-lived process sees it: found and hashed without importing it, and imported anew
from the code on disk, not from a copy an earlier import or a loaded model (MLflow `code_paths`) left behind."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from ctloop.references import BadReference, import_fresh, locate, package_dir, source_version


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"team_{uuid.uuid4().hex[:8]}"
    (tmp_path / "src" / name).mkdir(parents=True)
    (tmp_path / "src" / name / "__init__.py").write_text("")
    (tmp_path / "src" / name / "train.py").write_text("def train(ctx):\n    return 'on disk, v1'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def _model_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """What MLflow does when it loads a model logged with the package as code: `<model>/code` first on the path."""
    model = tmp_path / "artifacts" / "model"
    (model / "code" / name).mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "code" / name / "__init__.py").write_text("")
    (model / "code" / name / "train.py").write_text("def train(ctx):\n    return 'a logged copy'\n")
    monkeypatch.syspath_prepend(str(model / "code"))
    return model / "code" / name


def test_an_edit_is_what_the_next_fresh_import_runs(tmp_path: Path, package: str) -> None:
    assert import_fresh(f"{package}.train:train", "trainer")(None) == "on disk, v1"
    before = source_version(f"{package}.train:train")
    (tmp_path / "src" / package / "train.py").write_text("def train(ctx):\n    return 'on disk, v2'\n")
    assert import_fresh(f"{package}.train:train", "trainer")(None) == "on disk, v2"
    assert source_version(f"{package}.train:train") != before


def test_a_loaded_models_copy_is_neither_hashed_nor_trained(tmp_path: Path, package: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _model_copy(tmp_path, monkeypatch, package)
    __import__(f"{package}.train")
    assert Path(sys.modules[package].__file__).parent == copy, "the setup: the model's copy is the one imported"
    assert package_dir(f"{package}.train:train") == tmp_path / "src" / package
    assert import_fresh(f"{package}.train:train", "trainer")(None) == "on disk, v1"


def test_a_package_that_is_not_installed_is_named() -> None:
    with pytest.raises(BadReference, match=r"trainer 'no_such_pkg_x.m:f': module 'no_such_pkg_x.m' does not "
                                           r"import \(no package 'no_such_pkg_x'\).*pip install -e"):
        locate("no_such_pkg_x.m:f")

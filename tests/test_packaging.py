"""What `pip install .` puts on the path: one root package, `ctloop`, with every component under it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_for_installation():
    config = _setuptools()
    found = {".".join([name, *init.parent.relative_to(ROOT / folder).parts])
             for name, folder in config["package-dir"].items() for init in (ROOT / folder).rglob("__init__.py")}
    assert found == set(config["packages"])


def test_the_wheel_installs_one_top_level_package(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in _setuptools()["package-dir"].values():
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("ctloop-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"ctloop"}
    for module in ("ctloop/sensors/local/sensor.py", "ctloop/workflows/local/engine.py", "ctloop/app/cli.py",
                   "ctloop/trainer/train.py", "ctloop/deploy/serving.py", "ctloop/monitors/monitor.py"):
        assert module in names

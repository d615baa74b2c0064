"""The images install docker/*.lock: every runtime dependency in pyproject.toml must be pinned there, or a step
that imports it fails only inside the image (as orjson once did). `python tools/lock.py` rewrites the locks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pinned(lock: str) -> set[str]:
    text = (ROOT / "docker" / lock).read_text()
    return {canonicalize_name(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)}


@pytest.mark.parametrize(("lock", "without"), [("requirements.lock", set()), ("requirements-control.lock", {"torch"})])
def test_every_runtime_dependency_is_pinned_in_the_image_lock(lock: str, without: set[str]) -> None:
    needed = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]} - without
    assert needed - _pinned(lock) == set()

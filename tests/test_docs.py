"""The documentation site builds strictly, and its reference pages are what the code generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail(f"mkdocs is not installed beside {sys.executable}: install the dev extra (pip install -e '.[dev]')")
    built = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                           capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert built.returncode == 0, built.stderr[-3000:]
    for page in ("index.html", "getting-started/index.html", "concepts/serving/index.html", "trainers/index.html",
                 "reference/cli/index.html", "reference/settings/index.html", "reference/events/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_the_reference_pages_are_fresh() -> None:
    check = subprocess.run([sys.executable, "tools/docs_reference.py", "--check"], cwd=ROOT, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr


def test_every_page_is_in_the_nav() -> None:
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items) -> set[str]:
        found: set[str] = set()
        for item in items:
            for value in item.values() if isinstance(item, dict) else [item]:
                found |= pages(value) if isinstance(value, list) else {value}
        return found

    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == pages(nav)

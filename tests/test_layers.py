"""Imports point one way: core ← components ← applications.

The core (`ctloop/`) imports no component; `trainer`, `deploy` and `monitors` import only the core;
`workflows` builds on those three; `sensors` on `workflows`; the applications (`app/`) on everything,
and nothing imports them. Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"ctloop": "core", "trainer": "trainer", "deploy": "deploy", "monitors": "monitors",
           "workflows": "workflows", "sensors": "sensors", "app": "app"}
ALLOWED = {
    "core": {"core"},
    "trainer": {"core", "trainer"},
    "deploy": {"core", "deploy"},
    "monitors": {"core", "monitors"},
    "workflows": {"core", "trainer", "deploy", "monitors", "workflows"},
    "sensors": {"core", "trainer", "deploy", "monitors", "workflows", "sensors"},
    "app": set(FOLDERS.values()),
}
COMPONENT_NAMES = {"trainer", "deploy", "monitors", "workflows", "sensors", "app"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ctloop":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in COMPONENT_NAMES else "core"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "ctloop":
                found += [(node.lineno, f"ctloop.{alias.name}") for alias in node.names]
    return found


def _sources():
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield layer, path


@pytest.mark.parametrize(("layer", "path"), list(_sources()), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_a_module_imports_only_its_own_layer_and_those_below(layer, path):
    wrong = []
    for line, module in _imports(path):
        if module.split(".")[0] in COMPONENT_NAMES:
            wrong.append(f"{path.name}:{line} imports {module!r}, a top-level name; use 'ctloop.{module}'")
            continue
        target = _layer(module)
        if target is not None and target not in ALLOWED[layer]:
            wrong.append(f"{path.name}:{line} ({layer}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def test_tests_and_benchmarks_import_components_under_the_root_name():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module!r}"
             for folder in ("tests", "bench", "examples") for path in sorted((ROOT / folder).rglob("*.py"))
             for line, module in _imports(path) if module.split(".")[0] in COMPONENT_NAMES]
    assert not wrong, "\n".join(wrong)

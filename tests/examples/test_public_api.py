"""The examples are user projects: they use ctloop only through its public API (`from ctloop import ...`)."""

from __future__ import annotations

import ast
from pathlib import Path

import ctloop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_import_nothing_from_ctloop_but_the_public_api() -> None:
    sources = sorted(EXAMPLES.rglob("*.py"))
    assert len(sources) >= 6
    wrong = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ctloop"):
                names = {alias.name for alias in node.names}
                if node.module != "ctloop" or not names <= set(ctloop.__all__):
                    wrong.append(f"{path.relative_to(EXAMPLES)}:{node.lineno} from {node.module} import {names}")
            elif isinstance(node, ast.Import):
                wrong += [f"{path.relative_to(EXAMPLES)}:{node.lineno} import {a.name}"
                          for a in node.names if a.name.startswith("ctloop")]
    assert not wrong, "\n".join(wrong)

"""`package.module:function` references from a model spec (trainer, inputs, featurize, metrics), imported on use."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ctloop.failures import Refused


class BadReference(ImportError, Refused):
    """A reference that does not import or does not name a function; the message says which and why."""


def resolve(reference: str, what: str) -> Callable[..., Any]:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail on any error at import time
        raise BadReference(
            f"{what} {reference!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc}); "
            f"is its package installed in this environment (pip install -e YOUR_PROJECT) or in the image?"
        ) from exc
    target = getattr(module, attribute, None)
    if target is None:
        raise BadReference(f"{what} {reference!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(target):
        raise BadReference(f"{what} {reference!r}: {attribute!r} is a {type(target).__name__}, not a function")
    return target


def row_featurizer(reference: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The spec's `monitor.featurize` over a batch of prediction rows: rows in, monitored rows out."""
    fn = resolve(reference, "monitor.featurize")

    def featurize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import pandas as pd

        return fn(pd.DataFrame(rows)).to_dict(orient="records")

    return featurize


def package_dir(reference: str) -> Path | None:
    """The directory of the top-level package the reference lives in (a lone module: its file), where a fresh
    interpreter would import it from (`locate`); None for a package without files (a namespace package)."""
    found = locate(reference)
    origin = found.origin if found.has_location else None
    if origin is None:
        return None
    path = Path(origin)
    return path.parent if path.name == "__init__.py" else path


def locate(reference: str, what: str = "trainer") -> ModuleSpec:
    """Where a fresh interpreter finds the reference's top-level package, found without importing it.

    Not `sys.modules`, nor the `sys.path` entries MLflow prepends for each model it loads with `code_paths`
    (`<model>/code`): in a long-lived process (the sensor's in-process steps) those hold the copy logged
    with an earlier version, not the code on disk."""
    top = reference.partition(":")[0].split(".")[0]
    path = [p for p in sys.path if not _model_code_dir(p)]
    found = importlib.machinery.PathFinder.find_spec(top, path)
    for finder in sys.meta_path:  # an editable install's finder, after the path's
        if found is not None:
            break
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_spec"):
            with contextlib.suppress(ImportError, ValueError, AttributeError):
                found = finder.find_spec(top, None)
    if found is None:
        module = reference.partition(":")[0]
        raise BadReference(f"{what} {reference!r}: module {module!r} does not import (no package {top!r}); is "
                           f"its package installed in this environment (pip install -e YOUR_PROJECT) or in the "
                           f"image?")
    return found


def _model_code_dir(entry: str) -> bool:
    return Path(entry).name == "code" and (Path(entry).parent / "MLmodel").is_file()


def forget(reference: str) -> None:
    """Drop the reference's top-level package and its submodules from `sys.modules`, so the next import
    reads it again (from where `locate` finds it, or from a model's own logged copy)."""
    top = reference.partition(":")[0].split(".")[0]
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]


def import_fresh(reference: str, what: str) -> Callable[..., Any]:
    """`resolve`, with the reference's package imported anew from the code on disk (`locate`): what runs is
    the code its version names, even in a process that imported an older copy (edited since, or a model's)."""
    forget(reference)
    found = locate(reference, what)
    if found.loader is not None:
        top = found.name
        module = importlib.util.module_from_spec(found)
        sys.modules[top] = module
        try:
            found.loader.exec_module(module)
        except Exception as exc:  # the user's package may fail on any error at import time
            del sys.modules[top]
            raise BadReference(f"{what} {reference!r}: package {top!r} does not import "
                               f"({type(exc).__name__}: {exc})") from exc
    return resolve(reference, what)


def code_version(reference: str) -> str:
    """The reference's `source_version`, once it is checked to import and name a function."""
    resolve(reference, "trainer")
    return source_version(reference)


def source_version(reference: str) -> str:
    """sha256 of the reference's package source files (.py, sorted by relative path) plus its distribution's
    version when installed from one: changed code gives a new version, unchanged code the same. Reads the
    files without importing them (~0.25 ms for the examples' packages)."""
    root = package_dir(reference)
    h = hashlib.sha256(b"ctloop-code-v1\n")
    files = sorted(root.rglob("*.py")) if root is not None and root.is_dir() else [root] if root else []
    for path in files:
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent) if root is not None else path
        h.update(f"{rel.as_posix()}\n".encode())
        h.update(path.read_bytes())
    top = reference.partition(":")[0].split(".")[0]
    installed = _distribution_version(top)
    if installed:
        h.update(f"{top}=={installed}\n".encode())
    return "sha256:" + h.hexdigest()[:32]


def _distribution_version(top: str) -> str | None:
    """The version of the distribution named like the package (`my_team` or `my-team`), if installed.
    A name lookup, not `packages_distributions()`, which reads every installed package's file list (seconds)."""
    try:
        return version(top)
    except PackageNotFoundError:
        return None

"""Dependency filters evaluated locally with Argo Events' semantics (data filters ANDed, then exprs)."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from ctloop.sensors.eventdata import PathMissing, as_text, lookup
from ctloop.sensors.expr import ExprError, compile_expr, evaluate
from ctloop.sensors.spec import DataFilter, Dependency, ExprFilter

_TRUE = ("true", "1", "t")


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _as_bool(value: Any) -> bool:
    return value.lower() in _TRUE if isinstance(value, str) else bool(value)


def data_filter_passes(f: DataFilter, data: Any) -> bool:
    """Any of the filter's values satisfying the comparator passes it; a missing path fails it."""
    try:
        actual = lookup(data, f.path)
    except PathMissing:
        return False
    if f.type == "string":
        # gjson's string of a JSON null is "", which is what Argo Events matches the regexes against.
        text = "" if actual is None else as_text(actual)
        matched = any(_regex(v).search(text) for v in f.values)
        return matched if f.comparator == "=" else not all(_regex(v).search(text) for v in f.values)
    if f.type == "bool":
        got = _as_bool(actual)
        return any((got == _as_bool(v)) == (f.comparator == "=") for v in f.values)
    try:
        number = float(actual)
    except (TypeError, ValueError):
        return False
    return any(_compare(number, f.comparator, float(v)) for v in f.values)


def _compare(left: float, comparator: str, right: float) -> bool:
    return {
        "=": left == right, "!=": left != right, ">": left > right,
        ">=": left >= right, "<": left < right, "<=": left <= right,
    }[comparator]


@cache
def _compiled(f: ExprFilter) -> ast.Expression:
    return compile_expr(f.expr, {name for name, _ in f.fields})


def expr_filter_passes(f: ExprFilter, data: Any) -> bool:
    try:
        values = {name: lookup(data, path) for name, path in f.fields}
        return evaluate(_compiled(f), values)
    except (PathMissing, ExprError):
        return False


def rejection(dependency: Dependency, data: Any) -> str | None:
    """None when the event passes the dependency's filters, else the first filter that failed."""
    for f in dependency.data:
        if not data_filter_passes(f, data):
            if f.reason:
                return _fill(f.reason, data)
            return f"data filter {f.path} {f.comparator} {list(f.values)} failed"
    for f in dependency.exprs:
        if not expr_filter_passes(f, data):
            return f"expr filter {f.expr!r} failed"
    return None


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def _fill(template: str, data: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        try:
            return as_text(lookup(data, match.group(1)))
        except PathMissing:
            return "?"

    return _PLACEHOLDER.sub(value, template)

"""Dependency filters evaluated locally with Argo Events' semantics (data filters ANDed, then exprs).

Each filter is compiled once (paths split, patterns and the expression parsed) into a check that runs
on every event; `rejection` and the `*_passes` functions apply the same compiled checks. A string filter
also remembers its verdict on the texts it saw last: a stream repeats its types and model names.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from ctloop.sensors.eventdata import MISSING, PathMissing, as_text, find, lookup
from ctloop.sensors.expr import ExprError, compile_expr, evaluate
from ctloop.sensors.spec import DataFilter, Dependency, ExprFilter, check_path

Check = Callable[[Any], bool]
Rejection = Callable[[Any], "str | None"]

_TRUE = ("true", "1", "t")
_ANY = "^.+$"
_REMEMBERED = 4096  # texts whose verdict a string filter keeps; forgotten all at once when full
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _as_bool(value: Any) -> bool:
    return value.lower() in _TRUE if isinstance(value, str) else bool(value)


def data_filter_passes(f: DataFilter, data: Any) -> bool:
    """Any of the filter's values satisfying the comparator passes it; a missing path fails it."""
    return data_check(f)(data)


@cache
def data_check(f: DataFilter) -> Check:
    """`data_filter_passes` for one filter, compiled."""
    parts, passes = check_path(f.path), value_check(f)
    return lambda data: passes(find(data, parts))


@cache
def value_check(f: DataFilter) -> Check:
    """`data_check` of the value already found at the filter's path (`MISSING` when none is)."""
    if f.type == "string":
        return _string_check(f.values, f.comparator == "=")
    if f.type == "bool":
        wanted = tuple(_as_bool(v) for v in f.values)
        equal = f.comparator == "="

        def bool_passes(actual: Any) -> bool:
            if actual is MISSING:
                return False
            got = _as_bool(actual)
            return any((got == w) == equal for w in wanted)

        return bool_passes
    compare = _COMPARE[f.comparator]
    bounds = tuple(float(v) for v in f.values)

    def number_passes(actual: Any) -> bool:
        if actual is MISSING:
            return False
        try:
            number = float(actual)
        except (TypeError, ValueError):
            return False
        return any(compare(number, bound) for bound in bounds)

    return number_passes


def _string_check(values: tuple[str, ...], equal: bool) -> Check:
    """A string filter: any pattern found (`=`), or not all of them (`!=`), in gjson's text of the value."""
    patterns = tuple(_regex(v) for v in values)
    if equal and set(values) == {_ANY}:
        # "Has a value on one line", the commonest filter, read without the regex or a verdict to remember
        # (its texts, ids and URIs, rarely repeat).
        def any_passes(actual: Any) -> bool:
            if actual is MISSING or actual is None:
                return False
            text = actual if type(actual) is str else as_text(actual)
            return text != "" if "\n" not in text else _one_line(text)

        return any_passes
    if len(patterns) == 1:
        search = patterns[0].search
        matches = (lambda text: search(text) is not None) if equal else (lambda text: search(text) is None)
    elif equal:
        def matches(text: str) -> bool:
            return any(p.search(text) for p in patterns)
    else:
        def matches(text: str) -> bool:
            return not all(p.search(text) for p in patterns)
    verdicts: dict[str, bool] = {}

    def string_passes(actual: Any) -> bool:
        if actual is MISSING:
            return False
        # gjson's string of a JSON null is "", which is what Argo Events matches the regexes against.
        text = actual if type(actual) is str else "" if actual is None else as_text(actual)
        verdict = verdicts.get(text)
        if verdict is None:
            if len(verdicts) >= _REMEMBERED:
                verdicts.clear()
            verdict = verdicts[text] = matches(text)
        return verdict

    return string_passes


def _one_line(text: str) -> bool:
    """`re.search("^.+$", text)`: some text before the end or a final newline, and no other newline."""
    if text.endswith("\n"):
        text = text[:-1]
    return bool(text) and "\n" not in text


def expr_filter_passes(f: ExprFilter, data: Any) -> bool:
    return expr_check(f)(data)


@cache
def expr_check(f: ExprFilter) -> Check:
    """`expr_filter_passes` for one filter, compiled: a missing field or a failing expression fails it."""
    fields, passes = tuple(check_path(path) for _, path in f.fields), expr_value_check(f)
    return lambda data: passes([find(data, parts) for parts in fields])


@cache
def expr_value_check(f: ExprFilter) -> Callable[[Sequence[Any]], bool]:
    """`expr_check` of the values already found at the filter's fields, in their order (`MISSING` for none)."""
    tree = compile_expr(f.expr, {name for name, _ in f.fields})
    names = tuple(name for name, _ in f.fields)

    def passes(values: Sequence[Any]) -> bool:
        if any(value is MISSING for value in values):
            return False
        try:
            return evaluate(tree, dict(zip(names, values, strict=True)))
        except ExprError:
            return False

    return passes


def rejection(dependency: Dependency, data: Any) -> str | None:
    """None when the event passes the dependency's filters, else the first filter that failed."""
    return compile_rejection(dependency)(data)


@cache
def compile_rejection(dependency: Dependency) -> Rejection:
    """`rejection` for one dependency, compiled once for all the events it sees."""
    data_checks = tuple((f, data_check(f)) for f in dependency.data)
    expr_checks = tuple((f, expr_check(f)) for f in dependency.exprs)

    def why(data: Any) -> str | None:
        for f, passes in data_checks:
            if not passes(data):
                return failed(f, data)
        for f, passes in expr_checks:
            if not passes(data):
                return failed(f, data)
        return None

    return why


def failed(f: DataFilter | ExprFilter, data: Any) -> str:
    """Why an event failed the filter `f`: the filter's own reason (its placeholders filled from the event data)
    or the filter as written."""
    if isinstance(f, ExprFilter):
        return f"expr filter {f.expr!r} failed"
    if f.reason:
        return _fill(f.reason, data)
    return f"data filter {f.path} {f.comparator} {list(f.values)} failed"


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def _fill(template: str, data: Mapping[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        try:
            return as_text(lookup(data, match.group(1)))
        except PathMissing:
            return "?"

    return _PLACEHOLDER.sub(value, template)

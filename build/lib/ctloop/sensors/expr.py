"""Expr filters: the subset of govaluate syntax both engines agree on, evaluated locally without eval().

Supported: numbers, 'strings', true/false, field names, + - * /, comparisons, && || ! and parentheses.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKENS = (("&&", " and "), ("||", " or "))
_NOT = re.compile(r"!(?!=)")
_BOOL = re.compile(r"\b(true|false)\b")

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}


class ExprError(ValueError):
    """An expression outside the supported subset, or one that fails on the given fields."""


def _translate(expr: str) -> str:
    for go, py in _TOKENS:
        expr = expr.replace(go, py)
    expr = _NOT.sub(" not ", expr)
    return _BOOL.sub(lambda m: "True" if m.group(1) == "true" else "False", expr)


def compile_expr(expr: str, names: set[str]) -> ast.Expression:
    """Parse and check `expr`; every name must be one of `names`."""
    try:
        tree = ast.parse(_translate(expr), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expr {expr!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names:
            raise ExprError(f"expr {expr!r} uses {node.id!r}, which is not one of its fields {sorted(names)}")
        allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
                   ast.BinOp, ast.Name, ast.Load, ast.Constant, *_COMPARE, *_ARITH)
        if not isinstance(node, allowed):
            raise ExprError(f"expr {expr!r}: {type(node).__name__} is not supported")
    return tree


def evaluate(tree: ast.Expression, values: Mapping[str, Any]) -> bool:
    try:
        return bool(_eval(tree.body, values))
    except (TypeError, ZeroDivisionError) as exc:
        raise ExprError(f"expr failed: {exc}") from None


def _eval(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, values)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.BinOp):
        return _ARITH[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ExprError(f"unsupported node {type(node).__name__}")

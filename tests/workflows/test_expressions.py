"""Argo's `when`, `depends` and retry expressions are evaluated by a parser, never by eval."""

from __future__ import annotations

import re

import pytest

from ctloop.workflows.local.durations import seconds
from ctloop.workflows.local.expressions import ExpressionError, evaluate, is_true, names_in, substitute


def test_references_are_substituted_and_an_unknown_one_is_named() -> None:
    values = {"tasks.evaluate.outputs.parameters.promote": "true", "workflow.parameters.model": "churn"}
    assert substitute("{{tasks.evaluate.outputs.parameters.promote}} == true", values) == "true == true"
    assert substitute("m-{{ workflow.parameters.model }}", values) == "m-churn"
    with pytest.raises(ExpressionError, match=r"unresolved reference \{\{tasks.train.outputs.parameters.x\}\}"):
        substitute("{{tasks.train.outputs.parameters.x}}", values)


@pytest.mark.parametrize(("expression", "expected"), [
    ("true == true", True),
    ("false == true", False),
    ("heads == heads", True),
    ("'a b' != 'a b'", False),
    ("3 > 2 && 1 >= 1", True),
    ("2 < 1 || !(1 == 2)", True),
    ("10 == 10.0", True),
    ("'v1.2' =~ '^v1'", True),
    ("tails !~ 'h.*'", True),
    ("not (1 == 1) or 2 <= 1", False),
])
def test_when_conditions(expression: str, expected: bool) -> None:
    assert is_true(expression) is expected


def test_retry_expressions_read_dotted_names_and_functions() -> None:
    names = {"lastRetry.exitCode": "75", "lastRetry.status": "Failed"}
    assert is_true("asInt(lastRetry.exitCode) == 75", names)
    assert not is_true("asInt(lastRetry.exitCode) == 75 && lastRetry.status == Error", names)
    assert evaluate("asFloat('1.5')") == 1.5


@pytest.mark.parametrize(("expression", "problem"), [
    ("__import__('os')", "unknown function '__import__'"),
    ("open('x').read()", "cannot read"),
    ("1 ==", "unexpected end"),
    ("(1 == 1", "unexpected end"),
    ("1 == 1 )", "unexpected ')'"),
    ("a ; b", "cannot read"),
    ("abc < 3", "cannot order"),
    ("'x'", "not a boolean"),
])
def test_bad_expressions_raise_a_clear_error(expression: str, problem: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(problem)):
        is_true(expression)


def test_names_in_a_depends_expression() -> None:
    assert names_in("(train.Succeeded || train.Skipped) && !validate") == ["train.Succeeded", "train.Skipped",
                                                                           "validate"]


@pytest.mark.parametrize(("text", "expected"), [("30", 30.0), ("10s", 10.0), ("2m", 120.0), ("1h30m", 5400.0),
                                                ("250ms", 0.25), (None, None), (7, 7.0)])
def test_durations(text, expected) -> None:
    assert seconds(text) == expected


def test_a_bad_duration_is_named() -> None:
    with pytest.raises(ValueError, match="invalid duration '5 parsecs'"):
        seconds("5 parsecs")

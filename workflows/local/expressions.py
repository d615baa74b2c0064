"""Argo's small expression languages, evaluated safely (a parser, never `eval`).

Three places in a template hold expressions the local engine must understand:

- `{{...}}` references (`{{workflow.parameters.model}}`, `{{tasks.train.outputs.parameters.run-id}}`),
  substituted as text before anything else;
- `when` conditions (govaluate in Argo): comparisons, `&&`, `||`, `!`, parentheses, numbers, quoted
  strings, `true`/`false`; a bare word is a string, as in Argo's `{{...}} == heads` examples;
- `retryStrategy.expression` and `depends` (expr-lang in Argo): the same grammar plus dotted names
  (`lastRetry.exitCode`, `train.Succeeded`) looked up in a context, and `asInt`/`asFloat`/`string`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Value = str | float | bool


class ExpressionError(ValueError):
    """An expression the engine cannot read; the message quotes it."""


_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def references(text: str) -> list[str]:
    """The names inside `{{...}}` in `text`, in order."""
    return [m.group(1) for m in _REFERENCE.finditer(text)]


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every `{{name}}` by its value; an unknown name is an error that names it."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("="):
            raise ExpressionError(f"{{{{{name}}}}} in {text!r}: inline expr expressions are not supported locally")
        if name not in values:
            raise ExpressionError(f"unresolved reference {{{{{name}}}}} in {text!r}")
        return values[name]

    return _REFERENCE.sub(replace, text)


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


def _tokenize(expression: str) -> list[_Token]:
    tokens, pos = [], 0
    stripped = expression.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"cannot read {expression!r} at position {pos}: {stripped[pos:pos + 10]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_FUNCTIONS: dict[str, Callable[[Value], Value]] = {
    "asInt": lambda v: float(int(float(v))),
    "asFloat": lambda v: float(v),
    "string": lambda v: _text(v),
}


class _Parser:
    """Recursive descent: or > and > not > comparison > primary."""

    def __init__(self, expression: str, lookup: Callable[[str], Value | None]) -> None:
        self.expression = expression
        self.tokens = [_Token("op", _WORD_OPS[t.text]) if t.kind == "name" and t.text in _WORD_OPS else t
                       for t in _tokenize(expression)]
        self.pos = 0
        self.lookup = lookup

    def parse(self) -> Value:
        if not self.tokens:
            raise ExpressionError("empty expression")
        value = self._or()
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.pos].text!r} in {self.expression!r}")
        return value

    def _peek(self, *ops: str) -> bool:
        return self.pos < len(self.tokens) and self.tokens[self.pos].kind == "op" and self.tokens[self.pos].text in ops

    def _take(self) -> _Token:
        if self.pos >= len(self.tokens):
            raise ExpressionError(f"unexpected end of {self.expression!r}")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _expect(self, op: str) -> None:
        token = self._take()
        if token.text != op:
            raise ExpressionError(f"expected {op!r} but found {token.text!r} in {self.expression!r}")

    def _or(self) -> Value:
        value = self._and()
        while self._peek("||"):
            self._take()
            right = self._and()
            value = _truth(value) or _truth(right)
        return value

    def _and(self) -> Value:
        value = self._not()
        while self._peek("&&"):
            self._take()
            right = self._not()
            value = _truth(value) and _truth(right)
        return value

    def _not(self) -> Value:
        if self._peek("!"):
            self._take()
            return not _truth(self._not())
        return self._comparison()

    def _comparison(self) -> Value:
        left = self._primary()
        if self._peek("==", "!=", "<", ">", "<=", ">=", "=~", "!~"):
            op = self._take().text
            return _compare(op, left, self._primary())
        return left

    def _primary(self) -> Value:
        token = self._take()
        if token.kind == "op" and token.text == "(":
            value = self._or()
            self._expect(")")
            return value
        if token.kind == "number":
            return float(token.text)
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "name":
            if self._peek("("):
                return self._call(token.text)
            if token.text in ("true", "false"):
                return token.text == "true"
            found = self.lookup(token.text)
            return token.text if found is None else found
        raise ExpressionError(f"unexpected {token.text!r} in {self.expression!r}")

    def _call(self, name: str) -> Value:
        function = _FUNCTIONS.get(name)
        if function is None:
            raise ExpressionError(f"unknown function {name!r} in {self.expression!r} (known: {', '.join(_FUNCTIONS)})")
        self._expect("(")
        argument = self._or()
        self._expect(")")
        try:
            return function(argument)
        except (TypeError, ValueError) as exc:
            raise ExpressionError(f"{name}({argument!r}) in {self.expression!r}: {exc}") from None


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _truth(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    raise ExpressionError(f"{value!r} is not a boolean")


def _compare(op: str, left: Value, right: Value) -> bool:
    if op in ("=~", "!~"):
        try:
            matched = re.search(_text(right), _text(left)) is not None
        except re.error as exc:
            raise ExpressionError(f"bad regular expression {_text(right)!r}: {exc}") from None
        return matched if op == "=~" else not matched
    a, b = _number(left), _number(right)
    if a is None or b is None:
        if op in ("==", "!="):
            return (_text(left) == _text(right)) == (op == "==")
        raise ExpressionError(f"cannot order {left!r} and {right!r} with {op}")
    return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def evaluate(expression: str, names: Mapping[str, Any] | Callable[[str], Any] | None = None) -> Value:
    """The value of `expression`; `names` resolves dotted names (a mapping or a function returning None)."""
    if names is None:
        lookup: Callable[[str], Any] = lambda _name: None  # noqa: E731
    elif callable(names):
        lookup = names
    else:
        lookup = names.get
    return _Parser(expression, lookup).parse()


def is_true(expression: str, names: Mapping[str, Any] | Callable[[str], Any] | None = None) -> bool:
    """Evaluate a condition; anything but a boolean result is an error."""
    return _truth(evaluate(expression, names))


def names_in(expression: str) -> list[str]:
    """The bare names an expression mentions (not literals, functions or operators), e.g. task names in `depends`."""
    tokens = _tokenize(expression)
    found = []
    for i, token in enumerate(tokens):
        followed_by_call = i + 1 < len(tokens) and tokens[i + 1].text == "("
        if token.kind == "name" and token.text not in (*_WORD_OPS, "true", "false") and not followed_by_call:
            found.append(token.text)
    return found

"""Trigger parameters resolved locally: the same sources the rendered `dataKey`/`dataTemplate`s read."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from ctloop.sensors.eventdata import MISSING, PathMissing, as_text, find, go_empty, go_text, lookup
from ctloop.sensors.spec import (
    Concat,
    Const,
    Context,
    KeyOf,
    ParamSource,
    Path,
    Segment,
    SensorSpec,
    WorkflowName,
    check_path,
)
from ctloop.workflows.arguments import workflow_name
from ctloop.workflows.engine import idempotency_key


class MappingError(ValueError):
    """A parameter that cannot be resolved from the event; the message names it."""


def resolve(source: ParamSource, data: Any, context: Mapping[str, str],
            memo: dict[int, str] | None = None) -> str:
    """The value `source` names in the event data; `memo` shares a key between the parameters using it.

    A bare `Path` is rendered as a `dataKey` (gjson's text); every other source as a `dataTemplate`, whose
    values Go prints and whose functions take only strings, so both are reproduced here."""
    if isinstance(source, Path):
        return as_text(lookup(data, source.path))
    if isinstance(source, Const):
        return source.value
    if isinstance(source, Context):
        return context[source.key]
    return _templated(source, data, context, memo)


def _string(source: Path | Const | Segment, data: Any, context: Mapping[str, str]) -> str:
    """A value passed to a sprig function taking a string (`lower`, `splitList`): Go refuses anything else."""
    if not isinstance(source, Path):
        return _templated(source, data, context, None)
    value = lookup(data, source.path)
    if not isinstance(value, str):
        raise MappingError(f"{source.path} is not a string")
    return value


def _templated(source: ParamSource, data: Any, context: Mapping[str, str], memo: dict[int, str] | None) -> str:
    if isinstance(source, Path):
        return go_text(lookup(data, source.path))
    if isinstance(source, Const):
        return source.value
    if isinstance(source, Concat):
        return "".join(_templated(p, data, context, None) for p in source.parts)
    if isinstance(source, Segment):
        parts = _string(source.of, data, context).split("/")
        if source.index >= len(parts):
            raise MappingError(f"{source.of.path} has no segment {source.index}")
        return parts[source.index]
    if isinstance(source, KeyOf):
        if memo is not None and id(source) in memo:
            return memo[id(source)]
        try:
            digest = lookup(data, source.digest.path)
        except PathMissing:
            digest = None
        # sprig's `default`: a null, "", 0 or false digest takes the fallback.
        text = _templated(source.fallback, data, context, None) if go_empty(digest) else go_text(digest)
        model = _templated(source.model, data, context, None)
        key = idempotency_key(model, text, source.version_of(model))
        if memo is not None:
            memo[id(source)] = key
        return key
    if isinstance(source, WorkflowName):
        return workflow_name(_string(source.model, data, context), _templated(source.key, data, context, memo))
    raise MappingError(f"unsupported parameter source {source!r}")


def parameters(spec: SensorSpec, data: Any, context: Mapping[str, str]) -> dict[str, str]:
    """Every parameter of the sensor's trigger, or `MappingError` naming the one that failed."""
    out = {}
    memo: dict[int, str] = {}  # by identity: hashing the nested spec would cost more than the key
    for name, source in spec.params.items():
        try:
            value = resolve(source, data, context, memo)
        except PathMissing as exc:
            raise MappingError(f"parameter {name}: no value at {exc.args[0]}") from None
        if not value:
            raise MappingError(f"parameter {name}: empty")
        out[name] = value
    return out


Plan = Callable[[Any, Mapping[str, str]], dict[str, str]]
_Step = Callable[[Any, Mapping[str, str], dict[int, str]], str]
_Text = Callable[[Any, Mapping[str, str]], str]


def compile_parameters(spec: SensorSpec, *, made: Collection[str] | None = None) -> Plan:
    """`parameters` of one spec, compiled once for all the events it sees: the common sources (paths, constants,
    the key of a model and digest path, the workflow name) as closures over split paths, the rest through
    `resolve`. The same values and the same errors, in the same order. With `made`, only those parameters are
    returned; a workflow name outside it is checked (its model a string, its key) but not made."""
    steps = tuple((name, _checked(source) if made is not None and name not in made else _step(source))
                  for name, source in spec.params.items())
    wanted = frozenset(spec.params if made is None else made)

    def plan(data: Any, context: Mapping[str, str]) -> dict[str, str]:
        out = {}
        memo: dict[int, str] = {}
        for name, step in steps:
            try:
                value = step(data, context, memo)
            except PathMissing as exc:
                raise MappingError(f"parameter {name}: no value at {exc.args[0]}") from None
            if not value:
                raise MappingError(f"parameter {name}: empty")
            if name in wanted:
                out[name] = value
        return out

    return plan


def _checked(source: ParamSource) -> _Step:
    """A parameter whose value is not wanted: a workflow name fails as `_step`'s would but is not formatted
    (it is never empty); any other source is resolved as usual."""
    if not isinstance(source, WorkflowName) or not isinstance(source.key, KeyOf):
        return _step(source)
    model, key = _string_text(source.model), _key_step(source.key)

    def check(data: Any, context: Mapping[str, str], memo: dict[int, str]) -> str:
        model(data, context)
        return key(data, context, memo)

    return check


def _step(source: ParamSource) -> _Step:
    """`resolve(source, ...)` compiled."""
    if isinstance(source, Path):
        parts, path = check_path(source.path), source.path

        def key_of_path(data: Any, context: Mapping[str, str], memo: dict[int, str]) -> str:
            value = find(data, parts)
            if value is MISSING:
                raise PathMissing(path)
            return value if type(value) is str else as_text(value)

        return key_of_path
    if isinstance(source, Const):
        value = source.value
        return lambda data, context, memo: value
    if isinstance(source, Context):
        name = source.key
        return lambda data, context, memo: context[name]
    if isinstance(source, KeyOf):
        return _key_step(source)
    if isinstance(source, WorkflowName):
        model = _string_text(source.model)
        key = _key_step(source.key) if isinstance(source.key, KeyOf) else None

        def named(data: Any, context: Mapping[str, str], memo: dict[int, str]) -> str:
            of = model(data, context)
            return workflow_name(of, key(data, context, memo) if key is not None
                                 else _templated(source.key, data, context, memo))

        return named
    return lambda data, context, memo: resolve(source, data, context, memo)


def _key_step(source: KeyOf) -> _Step:
    """The idempotency key, computed once per event however many parameters use it (`memo`, by identity)."""
    digest_parts, fallback, model = check_path(source.digest.path), _text(source.fallback), _text(source.model)
    version_of, identity = source.version_of, id(source)

    def key(data: Any, context: Mapping[str, str], memo: dict[int, str]) -> str:
        known = memo.get(identity)
        if known is not None:
            return known
        digest = find(data, digest_parts)
        # sprig's `default`: a null, "", 0 or false digest takes the fallback.
        text = fallback(data, context) if digest is MISSING or go_empty(digest) else go_text(digest)
        of = model(data, context)
        made = memo[identity] = idempotency_key(of, text, version_of(of))
        return made

    return key


def _text(source: ParamSource) -> _Text:
    """`_templated(source, ...)` compiled for a path (Go's `%v` of its value); other sources as they are."""
    if not isinstance(source, Path):
        return lambda data, context: _templated(source, data, context, None)
    parts, path = check_path(source.path), source.path

    def text(data: Any, context: Mapping[str, str]) -> str:
        value = find(data, parts)
        if value is MISSING:
            raise PathMissing(path)
        return value if type(value) is str else go_text(value)

    return text


def _string_text(source: Path | Const | Segment) -> _Text:
    """`_string(source, ...)` compiled: a path's value must be a string."""
    if not isinstance(source, Path):
        return lambda data, context: _string(source, data, context)
    parts, path = check_path(source.path), source.path

    def text(data: Any, context: Mapping[str, str]) -> str:
        value = find(data, parts)
        if value is MISSING:
            raise PathMissing(path)
        if not isinstance(value, str):
            raise MappingError(f"{path} is not a string")
        return value

    return text

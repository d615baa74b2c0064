"""Trigger parameters resolved locally: the same sources the rendered `dataKey`/`dataTemplate`s read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctloop.sensors.eventdata import PathMissing, as_text, go_empty, go_text, lookup
from ctloop.sensors.spec import Concat, Const, Context, KeyOf, ParamSource, Path, Segment, SensorSpec, WorkflowName
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
